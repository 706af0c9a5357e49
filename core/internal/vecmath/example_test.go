package vecmath_test

import (
	"fmt"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

func ExampleSquaredL2() {
	a := vecmath.F32Bytes(nil, []float32{1, 2, 3, 4})
	// Values read in place from a database page need not be aligned: start b at an odd offset.
	b := vecmath.F32Bytes([]byte{0xee}, []float32{4, 6, 3, 4})[1:]
	fmt.Println(vecmath.SquaredL2(a, b))
	fmt.Println(vecmath.Dot(a, b), vecmath.L1(a, b))
	// Output:
	// 25
	// 41 7
}
