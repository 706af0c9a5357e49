// The float kernels' bodies, shared by the one-vector kernels (dotAVX2, squaredL2AVX2,
// dotAVX512, squaredL2AVX512) and the many-vector ones (dotManyAVX2, ...), so that both sum
// in the same order and give the same bits. A body takes SI and DI (the two inputs) and CX
// (their common length in whole floats), uses AX, K1 and Y0-Y7 (X1 as well), leaves the sum in
// X0, and jumps only to its own labels, five named by the caller (labels are per function; the
// AVX-512 bodies use four). It does not clear the upper halves of the registers: the caller
// ends with VZEROUPPER.

// The pieces the bodies share: four zeroed accumulators; 32 floats per iteration into Y0-Y3
// (LOOP32: the four loads of SI, then step against DI, again at lbl0 while 32 are left, then on
// to next); the reduction ((Y0+Y1)+(Y2+Y3), halves, pairs) into X0.
#define ZERO4 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3

#define DOT_STEP32 \
	VFMADD231PS (DI), Y4, Y0 \
	VFMADD231PS 32(DI), Y5, Y1 \
	VFMADD231PS 64(DI), Y6, Y2 \
	VFMADD231PS 96(DI), Y7, Y3

#define L2_STEP32 \
	VSUBPS (DI), Y4, Y4 \
	VSUBPS 32(DI), Y5, Y5 \
	VSUBPS 64(DI), Y6, Y6 \
	VSUBPS 96(DI), Y7, Y7 \
	VFMADD231PS Y4, Y4, Y0 \
	VFMADD231PS Y5, Y5, Y1 \
	VFMADD231PS Y6, Y6, Y2 \
	VFMADD231PS Y7, Y7, Y3

#define LOOP32(step, lbl0, next) \
lbl0: \
	CMPQ CX, $32 \
	JLT  next \
	VMOVUPS (SI), Y4 \
	VMOVUPS 32(SI), Y5 \
	VMOVUPS 64(SI), Y6 \
	VMOVUPS 96(SI), Y7 \
	step \
	ADDQ $128, SI \
	ADDQ $128, DI \
	SUBQ $32, CX \
	JMP  lbl0

#define REDUCE4 \
	VADDPS Y1, Y0, Y0 \
	VADDPS Y3, Y2, Y2 \
	VADDPS Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VMOVHLPS X0, X0, X1 \
	VADDPS X1, X0, X0 \
	VMOVSHDUP X0, X1 \
	VADDSS X1, X0, X0

// One whole 8-float block of a dot product or a squared distance into accumulator acc (AVX-512
// bodies: up to three blocks, into Y0, Y1, Y2).
#define DOT_BLOCK(acc) \
	VMOVUPS (SI), Y4 \
	VFMADD231PS (DI), Y4, acc \
	ADDQ $32, SI \
	ADDQ $32, DI \
	SUBQ $8, CX

#define L2_BLOCK(acc) \
	VMOVUPS (SI), Y4 \
	VSUBPS (DI), Y4, Y4 \
	VFMADD231PS Y4, Y4, acc \
	ADDQ $32, SI \
	ADDQ $32, DI \
	SUBQ $8, CX

// K1 = the CX low lanes (the AVX-512 bodies' masked tail).
#define TAILMASK \
	MOVL $1, AX \
	SHLL CX, AX \
	DECL AX \
	KMOVW AX, K1

// The last float of a scalar tail (AVX2 bodies), into X0.
#define DOT_SCALAR \
	VMOVSS (SI), X1 \
	VFMADD231SS (DI), X1, X0

#define L2_SCALAR \
	VMOVSS (SI), X1 \
	VSUBSS (DI), X1, X1 \
	VFMADD231SS X1, X1, X0

// The last 0-7 floats, masked (K1), into Y3 (AVX-512 bodies).
#define DOT_MASKED \
	VMOVUPS.Z (SI), K1, Y4 \
	VMOVUPS.Z (DI), K1, Y5 \
	VFMADD231PS Y5, Y4, Y3

#define L2_MASKED \
	VMOVUPS.Z (SI), K1, Y4 \
	VMOVUPS.Z (DI), K1, Y5 \
	VSUBPS Y5, Y4, Y4 \
	VFMADD231PS Y4, Y4, Y3

// BODY_START: the zeroed accumulators, the 32-float iterations, then (at lbl1) a first 8-float
// block into Y0 if 8 floats are left (else on to lbl2).
#define BODY_START(step32, block, lbl0, lbl1, lbl2) \
	ZERO4 \
	LOOP32(step32, lbl0, lbl1) \
lbl1: \
	CMPQ CX, $8 \
	JLT  lbl2 \
	block(Y0)

// AVX2_BODY: 32-float iterations, then 8-float blocks into Y0, the reduction, then a scalar
// tail.
#define AVX2_BODY(step32, block, scalar, lbl0, lbl1, lbl2, lbl3, lbl4) \
	BODY_START(step32, block, lbl0, lbl1, lbl2) \
	JMP  lbl1 \
lbl2: \
	REDUCE4 \
lbl3: \
	TESTQ CX, CX \
	JZ    lbl4 \
	scalar \
	ADDQ $4, SI \
	ADDQ $4, DI \
	DECQ CX \
	JMP  lbl3 \
lbl4:

// AVX512_BODY: 32-float iterations, up to three 8-float blocks into Y0, Y1 and Y2, the last
// 0-7 floats with a masked load into Y3, then the reduction.
#define AVX512_BODY(step32, block, masked, lbl0, lbl1, lbl2, lbl3) \
	BODY_START(step32, block, lbl0, lbl1, lbl2) \
	CMPQ CX, $8 \
	JLT  lbl2 \
	block(Y1) \
	CMPQ CX, $8 \
	JLT  lbl2 \
	block(Y2) \
lbl2: \
	TESTQ CX, CX \
	JZ    lbl3 \
	TAILMASK \
	masked \
lbl3: \
	REDUCE4

// The bodies of dotAVX2, squaredL2AVX2, dotAVX512 and squaredL2AVX512 (the AVX-512 ones leave
// their fifth label unused).
#define DOT_AVX2(lbl0, lbl1, lbl2, lbl3, lbl4) \
	AVX2_BODY(DOT_STEP32, DOT_BLOCK, DOT_SCALAR, lbl0, lbl1, lbl2, lbl3, lbl4)

#define L2_AVX2(lbl0, lbl1, lbl2, lbl3, lbl4) \
	AVX2_BODY(L2_STEP32, L2_BLOCK, L2_SCALAR, lbl0, lbl1, lbl2, lbl3, lbl4)

#define DOT_AVX512(lbl0, lbl1, lbl2, lbl3, unused) \
	AVX512_BODY(DOT_STEP32, DOT_BLOCK, DOT_MASKED, lbl0, lbl1, lbl2, lbl3)

#define L2_AVX512(lbl0, lbl1, lbl2, lbl3, unused) \
	AVX512_BODY(L2_STEP32, L2_BLOCK, L2_MASKED, lbl0, lbl1, lbl2, lbl3)

// The many-vector kernels, func(q []byte, vs [][]byte, off int, out []float32): out[i] is
// the body over q and vs[i][off:] for i < min(len(vs), len(out)), over no floats where vs[i]
// is shorter than off (off >= 0, checked by the Go caller). Registers: R8, R9 = q's base and
// length; R10 = the slice header of the current vector in vs; R11 = the vectors left; R12 = off;
// R13 = the current element of out; BX for the prefetches. MANY_ARGS(pre, predone) loads them
// and asks the CPU for the first 256 bytes of every vector, so that their cache misses
// overlap. MANY_NEXT ends the loop at done when no vector is left, asks for the rest of the
// next vector (the hardware cannot guess where it is), and sets SI, DI and CX for the body.
// MANY_STORE stores X0 and goes on to the next vector.
#define MANY_ARGS(pre, predone) \
	MOVQ q_base+0(FP), R8 \
	MOVQ q_len+8(FP), R9 \
	MOVQ vs_base+24(FP), R10 \
	MOVQ vs_len+32(FP), R11 \
	MOVQ off+48(FP), R12 \
	MOVQ out_base+56(FP), R13 \
	MOVQ out_len+64(FP), AX \
	CMPQ AX, R11 \
	CMOVQLT AX, R11 \
	MOVQ R10, AX \
	MOVQ R11, BX \
pre: \
	TESTQ BX, BX \
	JZ    predone \
	MOVQ (AX), DX \
	PREFETCHT0 (DX) \
	PREFETCHT0 64(DX) \
	PREFETCHT0 128(DX) \
	PREFETCHT0 192(DX) \
	ADDQ $24, AX \
	DECQ BX \
	JMP  pre \
predone:

#define MANY_NEXT(done, pf, nopf, long) \
	TESTQ R11, R11 \
	JZ    done \
	CMPQ R11, $1 \
	JEQ  nopf \
	MOVQ 24(R10), AX \
	MOVQ 32(R10), BX \
	ADDQ AX, BX \
	ADDQ $256, AX \
pf: \
	CMPQ AX, BX \
	JAE  nopf \
	PREFETCHT0 (AX) \
	ADDQ $64, AX \
	JMP  pf \
nopf: \
	MOVQ (R10), DI \
	MOVQ 8(R10), DX \
	SUBQ R12, DX \
	JGE  long \
	XORQ DX, DX \
long: \
	ADDQ R12, DI \
	MOVQ R8, SI \
	MOVQ R9, CX \
	CMPQ DX, CX \
	CMOVQLT DX, CX \
	SHRQ $2, CX

#define MANY_STORE(loop) \
	MOVSS X0, (R13) \
	ADDQ $4, R13 \
	ADDQ $24, R10 \
	DECQ R11 \
	JMP  loop

// MANY_KERNEL is a whole many-vector kernel around body, given its labels.
#define MANY_KERNEL(body, pre, predone, loop, done, pf, nopf, long, b0, b1, b2, b3, b4) \
	MANY_ARGS(pre, predone) \
loop: \
	MANY_NEXT(done, pf, nopf, long) \
	body(b0, b1, b2, b3, b4) \
	MANY_STORE(loop) \
done: \
	VZEROUPPER \
	RET
