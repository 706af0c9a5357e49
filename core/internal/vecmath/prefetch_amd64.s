//go:build !purego

#include "textflag.h"

// func prefetch(p *byte)
TEXT ·prefetch(SB), NOSPLIT, $0-8
	MOVQ p+0(FP), AX
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	PREFETCHT0 128(AX)
	PREFETCHT0 192(AX)
	RET

// func prefetchRange(p *byte, n int)
TEXT ·prefetchRange(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	ADDQ AX, CX
pr_loop:
	CMPQ AX, CX
	JAE  pr_done
	PREFETCHT0 (AX)
	ADDQ $64, AX
	JMP  pr_loop
pr_done:
	RET
