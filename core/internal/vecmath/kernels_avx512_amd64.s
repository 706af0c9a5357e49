//go:build !purego

#include "textflag.h"
#include "floatbody_amd64.h"

// AVX-512 distance kernels for amd64 (see kernels_amd64.s for the AVX2 ones and the common
// rules: each kernel computes n = min(len(a), len(b)) itself, never reads beyond n bytes, and
// uses unaligned loads only). Masked loads read zero in the masked-off lanes and never fault
// there, so tails need no scalar loop and cannot read out of bounds. Registers R14 and
// X15/Y15/Z15 (special in Go's internal ABI) and Z16-Z31 are not used.
//
// Float kernels (Dot, SquaredL2, L1): the body is the AVX2 one (four independent 8-lane
// accumulators Y0..Y3 over 32 floats per iteration); then up to three whole 8-float blocks,
// into Y0, Y1 and Y2 in that order; then the last 0-7 floats with a masked load (AVX512VL,
// K1 = (1<<r)-1) into Y3; then the reduction ((Y0+Y1)+(Y2+Y3), halves, pairs). The order
// depends only on the length, so results are deterministic. 16-lane (ZMM) bodies were measured
// slower on the project's machine (AMD Zen 4 splits 512-bit operations in two, and the wider
// reduction costs more): the gain is the masked tail, 10-20% at 50 and 784 dims.
//
// DotU8 uses ZMM registers (16 codes widened and converted per step: fewer instructions than
// the AVX2 kernel, 10-30% faster); XorPopcount uses VPOPCNTQ on ZMM registers.
//
// Needs AVX2, FMA, AVX512F and AVX512VL; xorPopcountAVX512 also needs AVX512BW (byte masks)
// and AVX512_VPOPCNTDQ.

// func dotAVX512(a, b []byte) float32
TEXT ·dotAVX512(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	SHRQ $2, CX              // CX = number of whole floats
	DOT_AVX512(dot512_loop32, dot512_block0, dot512_tail, dot512_reduce, dot512_unused)
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func squaredL2AVX512(a, b []byte) float32
TEXT ·squaredL2AVX512(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	SHRQ $2, CX
	L2_AVX512(l2_512_loop32, l2_512_block0, l2_512_tail, l2_512_reduce, l2_512_unused)
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotManyAVX512(q []byte, vs [][]byte, off int, out []float32)
TEXT ·dotManyAVX512(SB), NOSPLIT, $0-80
	MANY_KERNEL(DOT_AVX512, dotmanyavx512_pre, dotmanyavx512_predone, dotmanyavx512_loop, dotmanyavx512_done, dotmanyavx512_pf, dotmanyavx512_nopf, dotmanyavx512_long, dotmanyavx512_b0, dotmanyavx512_b1, dotmanyavx512_b2, dotmanyavx512_b3, dotmanyavx512_b4)

// func squaredL2ManyAVX512(q []byte, vs [][]byte, off int, out []float32)
TEXT ·squaredL2ManyAVX512(SB), NOSPLIT, $0-80
	MANY_KERNEL(L2_AVX512, squaredl2manyavx512_pre, squaredl2manyavx512_predone, squaredl2manyavx512_loop, squaredl2manyavx512_done, squaredl2manyavx512_pf, squaredl2manyavx512_nopf, squaredl2manyavx512_long, squaredl2manyavx512_b0, squaredl2manyavx512_b1, squaredl2manyavx512_b2, squaredl2manyavx512_b3, squaredl2manyavx512_b4)

// func l1AVX512(a, b []byte) float32
TEXT ·l1AVX512(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	SHRQ $2, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VPCMPEQD Y8, Y8, Y8
	VPSRLD $1, Y8, Y8        // Y8 = 0x7fffffff in every lane: clears the sign bit

l1_512_loop32:
	CMPQ CX, $32
	JLT  l1_512_block0
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VSUBPS (DI), Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y0, Y0
	VSUBPS 32(DI), Y5, Y5
	VANDPS Y8, Y5, Y5
	VADDPS Y5, Y1, Y1
	VSUBPS 64(DI), Y6, Y6
	VANDPS Y8, Y6, Y6
	VADDPS Y6, Y2, Y2
	VSUBPS 96(DI), Y7, Y7
	VANDPS Y8, Y7, Y7
	VADDPS Y7, Y3, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  l1_512_loop32

l1_512_block0:
	CMPQ CX, $8
	JLT  l1_512_tail
	VMOVUPS (SI), Y4
	VSUBPS (DI), Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y0, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	CMPQ CX, $8
	JLT  l1_512_tail
	VMOVUPS (SI), Y4
	VSUBPS (DI), Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y1, Y1
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	CMPQ CX, $8
	JLT  l1_512_tail
	VMOVUPS (SI), Y4
	VSUBPS (DI), Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y2, Y2
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX

l1_512_tail:
	TESTQ CX, CX
	JZ    l1_512_reduce
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Y4
	VMOVUPS.Z (DI), K1, Y5
	VSUBPS Y5, Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y3, Y3

l1_512_reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotU8AVX512(w []float32, c []byte) float32
// Σ w[i]*float32(c[i]) over n = min(len(w), len(c)): 16 codes at a time widened to int32
// (VPMOVZXBD), converted to float and multiplied by 16 weights; four 16-lane accumulators
// Z0..Z3 over 64 codes per iteration, then up to three whole 16-code blocks into Z0, Z1 and
// Z2, then the last 0-15 codes and weights with masks (K1 = (1<<r)-1; the masked VPMOVZXBD
// reads only the bytes of the lanes in K1) into Z3, then the reduction ((Z0+Z1)+(Z2+Z3),
// 256-bit halves, then as in dotAVX512).
TEXT ·dotU8AVX512(SB), NOSPLIT, $0-52
	MOVQ w_base+0(FP), SI
	MOVQ w_len+8(FP), CX
	MOVQ c_base+24(FP), DI
	MOVQ c_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3

u8_512_loop64:
	CMPQ CX, $64
	JLT  u8_512_block0
	VPMOVZXBD (DI), Z4
	VPMOVZXBD 16(DI), Z5
	VPMOVZXBD 32(DI), Z6
	VPMOVZXBD 48(DI), Z7
	VCVTDQ2PS Z4, Z4
	VCVTDQ2PS Z5, Z5
	VCVTDQ2PS Z6, Z6
	VCVTDQ2PS Z7, Z7
	VFMADD231PS (SI), Z4, Z0
	VFMADD231PS 64(SI), Z5, Z1
	VFMADD231PS 128(SI), Z6, Z2
	VFMADD231PS 192(SI), Z7, Z3
	ADDQ $256, SI
	ADDQ $64, DI
	SUBQ $64, CX
	JMP  u8_512_loop64

u8_512_block0:
	CMPQ CX, $16
	JLT  u8_512_tail
	VPMOVZXBD (DI), Z4
	VCVTDQ2PS Z4, Z4
	VFMADD231PS (SI), Z4, Z0
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, CX
	CMPQ CX, $16
	JLT  u8_512_tail
	VPMOVZXBD (DI), Z4
	VCVTDQ2PS Z4, Z4
	VFMADD231PS (SI), Z4, Z1
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, CX
	CMPQ CX, $16
	JLT  u8_512_tail
	VPMOVZXBD (DI), Z4
	VCVTDQ2PS Z4, Z4
	VFMADD231PS (SI), Z4, Z2
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, CX

u8_512_tail:
	TESTQ CX, CX
	JZ    u8_512_reduce
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VPMOVZXBD.Z (DI), K1, Z4
	VCVTDQ2PS Z4, Z4
	VMOVUPS.Z (SI), K1, Z5
	VFMADD231PS Z5, Z4, Z3

u8_512_reduce:
	VADDPS Z1, Z0, Z0
	VADDPS Z3, Z2, Z2
	VADDPS Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func xorPopcountAVX512(a, b []byte) uint64
// 64-byte blocks, four at a time into four accumulators of 8 per-word counts (VPOPCNTQ), then
// up to three single blocks, then the last 0-63 bytes with a masked byte load (AVX512BW; the
// masked-off bytes read as zero and never fault), then the sum of the 8 lanes.
TEXT ·xorPopcountAVX512(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX           // CX = bytes
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	VPXORQ Z2, Z2, Z2
	VPXORQ Z3, Z3, Z3

pop512_loop256:
	CMPQ CX, $256
	JLT  pop512_block0
	VMOVDQU64 (SI), Z4
	VMOVDQU64 64(SI), Z5
	VMOVDQU64 128(SI), Z6
	VMOVDQU64 192(SI), Z7
	VPXORQ (DI), Z4, Z4
	VPXORQ 64(DI), Z5, Z5
	VPXORQ 128(DI), Z6, Z6
	VPXORQ 192(DI), Z7, Z7
	VPOPCNTQ Z4, Z4
	VPOPCNTQ Z5, Z5
	VPOPCNTQ Z6, Z6
	VPOPCNTQ Z7, Z7
	VPADDQ Z4, Z0, Z0
	VPADDQ Z5, Z1, Z1
	VPADDQ Z6, Z2, Z2
	VPADDQ Z7, Z3, Z3
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, CX
	JMP  pop512_loop256

pop512_block0:
	CMPQ CX, $64
	JLT  pop512_tail
	VMOVDQU64 (SI), Z4
	VPXORQ (DI), Z4, Z4
	VPOPCNTQ Z4, Z4
	VPADDQ Z4, Z0, Z0
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $64, CX
	CMPQ CX, $64
	JLT  pop512_tail
	VMOVDQU64 (SI), Z4
	VPXORQ (DI), Z4, Z4
	VPOPCNTQ Z4, Z4
	VPADDQ Z4, Z1, Z1
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $64, CX
	CMPQ CX, $64
	JLT  pop512_tail
	VMOVDQU64 (SI), Z4
	VPXORQ (DI), Z4, Z4
	VPOPCNTQ Z4, Z4
	VPADDQ Z4, Z2, Z2
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $64, CX

pop512_tail:
	TESTQ CX, CX
	JZ    pop512_reduce
	MOVQ $1, AX
	SHLQ CX, AX
	DECQ AX
	KMOVQ AX, K1             // K1 = the CX low bytes
	VMOVDQU8.Z (SI), K1, Z4
	VMOVDQU8.Z (DI), K1, Z5
	VPXORQ Z5, Z4, Z4
	VPOPCNTQ Z4, Z4
	VPADDQ Z4, Z3, Z3

pop512_reduce:
	VPADDQ Z1, Z0, Z0
	VPADDQ Z3, Z2, Z2
	VPADDQ Z2, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDQ Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDQ X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDQ X1, X0, X0
	VMOVQ X0, AX
	VZEROUPPER
	MOVQ AX, ret+48(FP)
	RET
