//go:build !purego

#include "textflag.h"
#include "floatbody_amd64.h"

// Distance kernels for amd64. All loads are unaligned (VMOVUPS, or VEX memory operands, which
// need no alignment): vectors are read in place from LMDB pages at any address.
//
// Each kernel first computes n = min(len(a), len(b)) itself and never reads beyond n bytes.
// Float kernels: four independent 8-lane accumulators (Y0..Y3) over 32 floats per iteration,
// then 8-float steps into Y0, then the reduction ((Y0+Y1)+(Y2+Y3), halves, pairs), then a
// scalar tail added to the reduced sum. The order is fixed, so results are deterministic.
// The loop does not peel to an aligned address: that would make the summation order depend
// on the address. Misaligned data costs cache-line-split loads (about +15-40% on this machine
// type at 128-768 dims), which is small next to the cache misses of a graph search.
// Registers R14 and X15 (special in Go's internal ABI) are not used.

// func dotAVX2(a, b []byte) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	SHRQ $2, CX              // CX = number of whole floats
	DOT_AVX2(dot_loop32, dot_loop8, dot_reduce, dot_tail, dot_done)
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func squaredL2AVX2(a, b []byte) float32
TEXT ·squaredL2AVX2(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	SHRQ $2, CX
	L2_AVX2(l2_loop32, l2_loop8, l2_reduce, l2_tail, l2_done)
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotManyAVX2(q []byte, vs [][]byte, off int, out []float32)
TEXT ·dotManyAVX2(SB), NOSPLIT, $0-80
	MANY_KERNEL(DOT_AVX2, dotmanyavx2_pre, dotmanyavx2_predone, dotmanyavx2_loop, dotmanyavx2_done, dotmanyavx2_pf, dotmanyavx2_nopf, dotmanyavx2_long, dotmanyavx2_b0, dotmanyavx2_b1, dotmanyavx2_b2, dotmanyavx2_b3, dotmanyavx2_b4)

// func squaredL2ManyAVX2(q []byte, vs [][]byte, off int, out []float32)
TEXT ·squaredL2ManyAVX2(SB), NOSPLIT, $0-80
	MANY_KERNEL(L2_AVX2, squaredl2manyavx2_pre, squaredl2manyavx2_predone, squaredl2manyavx2_loop, squaredl2manyavx2_done, squaredl2manyavx2_pf, squaredl2manyavx2_nopf, squaredl2manyavx2_long, squaredl2manyavx2_b0, squaredl2manyavx2_b1, squaredl2manyavx2_b2, squaredl2manyavx2_b3, squaredl2manyavx2_b4)

// func l1AVX2(a, b []byte) float32
TEXT ·l1AVX2(SB), NOSPLIT, $0-52
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

l1_loop32:
	CMPQ CX, $32
	JLT  l1_loop8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VSUBPS (DI), Y4, Y4
	VSUBPS 32(DI), Y5, Y5
	VSUBPS 64(DI), Y6, Y6
	VSUBPS 96(DI), Y7, Y7
	VANDPS Y8, Y4, Y4
	VANDPS Y8, Y5, Y5
	VANDPS Y8, Y6, Y6
	VANDPS Y8, Y7, Y7
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  l1_loop32

l1_loop8:
	CMPQ CX, $8
	JLT  l1_reduce
	VMOVUPS (SI), Y4
	VSUBPS (DI), Y4, Y4
	VANDPS Y8, Y4, Y4
	VADDPS Y4, Y0, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  l1_loop8

l1_reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0

l1_tail:
	TESTQ CX, CX
	JZ    l1_done
	VMOVSS (SI), X1
	VSUBSS (DI), X1, X1
	VANDPS X8, X1, X1
	VADDSS X1, X0, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  l1_tail

l1_done:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func xorPopcountPOPCNT(a, b []byte) uint64
// Whole 8-byte words four at a time into four counters, then single words, then tail bytes.
TEXT ·xorPopcountPOPCNT(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), CX
	MOVQ b_base+24(FP), DI
	MOVQ b_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	MOVQ CX, BX
	ANDQ $7, BX              // BX = tail bytes
	SHRQ $3, CX              // CX = whole words
	XORQ R8, R8
	XORQ R9, R9
	XORQ R10, R10
	XORQ R11, R11

pop_loop4:
	CMPQ CX, $4
	JLT  pop_loop1
	MOVQ (SI), AX
	MOVQ 8(SI), DX
	MOVQ 16(SI), R12
	MOVQ 24(SI), R13
	XORQ (DI), AX
	XORQ 8(DI), DX
	XORQ 16(DI), R12
	XORQ 24(DI), R13
	POPCNTQ AX, AX
	POPCNTQ DX, DX
	POPCNTQ R12, R12
	POPCNTQ R13, R13
	ADDQ AX, R8
	ADDQ DX, R9
	ADDQ R12, R10
	ADDQ R13, R11
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $4, CX
	JMP  pop_loop4

pop_loop1:
	TESTQ CX, CX
	JZ    pop_bytes
	MOVQ (SI), AX
	XORQ (DI), AX
	POPCNTQ AX, AX
	ADDQ AX, R8
	ADDQ $8, SI
	ADDQ $8, DI
	DECQ CX
	JMP  pop_loop1

pop_bytes:
	TESTQ BX, BX
	JZ    pop_done
	MOVBQZX (SI), AX
	MOVBQZX (DI), DX
	XORQ DX, AX
	POPCNTQ AX, AX
	ADDQ AX, R9
	INCQ SI
	INCQ DI
	DECQ BX
	JMP  pop_bytes

pop_done:
	ADDQ R9, R8
	ADDQ R11, R10
	ADDQ R10, R8
	MOVQ R8, ret+48(FP)
	RET

// func dotU8AVX2(w []float32, c []byte) float32
// Σ w[i]*float32(c[i]) over n = min(len(w), len(c)): bytes widened to int32 (VPMOVZXBD), then
// to float, then the same four accumulators, reduction and scalar tail as dotAVX2.
TEXT ·dotU8AVX2(SB), NOSPLIT, $0-52
	MOVQ w_base+0(FP), SI
	MOVQ w_len+8(FP), CX
	MOVQ c_base+24(FP), DI
	MOVQ c_len+32(FP), DX
	CMPQ DX, CX
	CMOVQLT DX, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

u8_loop32:
	CMPQ CX, $32
	JLT  u8_loop8
	VPMOVZXBD (DI), Y4
	VPMOVZXBD 8(DI), Y5
	VPMOVZXBD 16(DI), Y6
	VPMOVZXBD 24(DI), Y7
	VCVTDQ2PS Y4, Y4
	VCVTDQ2PS Y5, Y5
	VCVTDQ2PS Y6, Y6
	VCVTDQ2PS Y7, Y7
	VFMADD231PS (SI), Y4, Y0
	VFMADD231PS 32(SI), Y5, Y1
	VFMADD231PS 64(SI), Y6, Y2
	VFMADD231PS 96(SI), Y7, Y3
	ADDQ $128, SI
	ADDQ $32, DI
	SUBQ $32, CX
	JMP  u8_loop32

u8_loop8:
	CMPQ CX, $8
	JLT  u8_reduce
	VPMOVZXBD (DI), Y4
	VCVTDQ2PS Y4, Y4
	VFMADD231PS (SI), Y4, Y0
	ADDQ $32, SI
	ADDQ $8, DI
	SUBQ $8, CX
	JMP  u8_loop8

u8_reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0

u8_tail:
	TESTQ CX, CX
	JZ    u8_done
	MOVBLZX (DI), AX
	VCVTSI2SSL AX, X1, X1
	VFMADD231SS (SI), X1, X0
	ADDQ $4, SI
	INCQ DI
	DECQ CX
	JMP  u8_tail

u8_done:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET
