//go:build amd64 && !noasm

#include "textflag.h"

// AVX-512 kernels take n a multiple of 16, AVX2 kernels a multiple of 8
// (n > 0 is not required). Go's operand order is reversed from Intel's:
// VSUBPS b, a, d is d = a − b; VFMADD231PS b, a, d is d += a·b;
// VFMADD213PS c, a, d is d = a·d + c.

// Horizontal sum of the eight doubles of Z0 into X0 (clobbers Z1).
#define HSUM512(z, y, x) \
	VEXTRACTF64X4 $1, z, Y1; \
	VADDPD        Y1, y, y; \
	VEXTRACTF128  $1, y, X1; \
	VADDPD        X1, x, x; \
	VPERMILPD     $1, x, X1; \
	VADDSD        X1, x, x

#define HSUM256(y, x) \
	VEXTRACTF128 $1, y, X1; \
	VADDPD       X1, x, x; \
	VPERMILPD    $1, x, X1; \
	VADDSD       X1, x, x

// func sumSqShift512(x *float32, n int, k float64) (s1, s2 float64)
TEXT ·sumSqShift512(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSD k+16(FP), Z31
	VXORPD       Z0, Z0, Z0
	VXORPD       Z2, Z2, Z2
	VXORPD       Z3, Z3, Z3
	VXORPD       Z4, Z4, Z4
	VXORPD       Z5, Z5, Z5
	VXORPD       Z6, Z6, Z6
	VXORPD       Z7, Z7, Z7
	VXORPD       Z8, Z8, Z8
	CMPQ         CX, $32
	JLT          ss512tail

ss512loop:
	VCVTPS2PD   (SI), Z10
	VCVTPS2PD   32(SI), Z11
	VCVTPS2PD   64(SI), Z12
	VCVTPS2PD   96(SI), Z13
	VSUBPD      Z31, Z10, Z10
	VSUBPD      Z31, Z11, Z11
	VSUBPD      Z31, Z12, Z12
	VSUBPD      Z31, Z13, Z13
	VADDPD      Z10, Z0, Z0
	VADDPD      Z11, Z2, Z2
	VADDPD      Z12, Z3, Z3
	VADDPD      Z13, Z4, Z4
	VFMADD231PD Z10, Z10, Z5
	VFMADD231PD Z11, Z11, Z6
	VFMADD231PD Z12, Z12, Z7
	VFMADD231PD Z13, Z13, Z8
	ADDQ        $128, SI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JGE         ss512loop

ss512tail:
	TESTQ       CX, CX
	JEQ         ss512done
	VCVTPS2PD   (SI), Z10
	VCVTPS2PD   32(SI), Z11
	VSUBPD      Z31, Z10, Z10
	VSUBPD      Z31, Z11, Z11
	VADDPD      Z10, Z0, Z0
	VADDPD      Z11, Z2, Z2
	VFMADD231PD Z10, Z10, Z5
	VFMADD231PD Z11, Z11, Z6

ss512done:
	VADDPD  Z2, Z0, Z0
	VADDPD  Z4, Z3, Z3
	VADDPD  Z3, Z0, Z0
	VADDPD  Z6, Z5, Z5
	VADDPD  Z8, Z7, Z7
	VADDPD  Z7, Z5, Z5
	HSUM512(Z0, Y0, X0)
	VMOVSD  X0, s1+24(FP)
	VMOVAPD Z5, Z0
	HSUM512(Z0, Y0, X0)
	VMOVSD  X0, s2+32(FP)
	VZEROUPPER
	RET

// func sumSqShift256(x *float32, n int, k float64) (s1, s2 float64)
TEXT ·sumSqShift256(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSD k+16(FP), Y15
	VXORPD       Y0, Y0, Y0
	VXORPD       Y2, Y2, Y2
	VXORPD       Y3, Y3, Y3
	VXORPD       Y4, Y4, Y4
	VXORPD       Y5, Y5, Y5
	VXORPD       Y6, Y6, Y6
	VXORPD       Y7, Y7, Y7
	VXORPD       Y8, Y8, Y8
	CMPQ         CX, $16
	JLT          ss256tail

ss256loop:
	VCVTPS2PD   (SI), Y10
	VCVTPS2PD   16(SI), Y11
	VCVTPS2PD   32(SI), Y12
	VCVTPS2PD   48(SI), Y13
	VSUBPD      Y15, Y10, Y10
	VSUBPD      Y15, Y11, Y11
	VSUBPD      Y15, Y12, Y12
	VSUBPD      Y15, Y13, Y13
	VADDPD      Y10, Y0, Y0
	VADDPD      Y11, Y2, Y2
	VADDPD      Y12, Y3, Y3
	VADDPD      Y13, Y4, Y4
	VFMADD231PD Y10, Y10, Y5
	VFMADD231PD Y11, Y11, Y6
	VFMADD231PD Y12, Y12, Y7
	VFMADD231PD Y13, Y13, Y8
	ADDQ        $64, SI
	SUBQ        $16, CX
	CMPQ        CX, $16
	JGE         ss256loop

ss256tail:
	TESTQ       CX, CX
	JEQ         ss256done
	VCVTPS2PD   (SI), Y10
	VCVTPS2PD   16(SI), Y11
	VSUBPD      Y15, Y10, Y10
	VSUBPD      Y15, Y11, Y11
	VADDPD      Y10, Y0, Y0
	VADDPD      Y11, Y2, Y2
	VFMADD231PD Y10, Y10, Y5
	VFMADD231PD Y11, Y11, Y6

ss256done:
	VADDPD  Y2, Y0, Y0
	VADDPD  Y4, Y3, Y3
	VADDPD  Y3, Y0, Y0
	VADDPD  Y6, Y5, Y5
	VADDPD  Y8, Y7, Y7
	VADDPD  Y7, Y5, Y5
	HSUM256(Y0, X0)
	VMOVSD  X0, s1+24(FP)
	VMOVAPD Y5, Y0
	HSUM256(Y0, X0)
	VMOVSD  X0, s2+32(FP)
	VZEROUPPER
	RET

// func gradSums512(grad, x *float32, n int, mu float64) (sg, sgx float64)
TEXT ·gradSums512(SB), NOSPLIT, $0-48
	MOVQ         grad+0(FP), SI
	MOVQ         x+8(FP), DI
	MOVQ         n+16(FP), CX
	VBROADCASTSD mu+24(FP), Z31
	VXORPD       Z0, Z0, Z0
	VXORPD       Z2, Z2, Z2
	VXORPD       Z3, Z3, Z3
	VXORPD       Z4, Z4, Z4
	VXORPD       Z5, Z5, Z5
	VXORPD       Z6, Z6, Z6
	VXORPD       Z7, Z7, Z7
	VXORPD       Z8, Z8, Z8
	CMPQ         CX, $32
	JLT          gs512tail

gs512loop:
	VCVTPS2PD   (SI), Z10
	VCVTPS2PD   32(SI), Z11
	VCVTPS2PD   64(SI), Z12
	VCVTPS2PD   96(SI), Z13
	VCVTPS2PD   (DI), Z14
	VCVTPS2PD   32(DI), Z15
	VCVTPS2PD   64(DI), Z16
	VCVTPS2PD   96(DI), Z17
	VSUBPD      Z31, Z14, Z14
	VSUBPD      Z31, Z15, Z15
	VSUBPD      Z31, Z16, Z16
	VSUBPD      Z31, Z17, Z17
	VADDPD      Z10, Z0, Z0
	VADDPD      Z11, Z2, Z2
	VADDPD      Z12, Z3, Z3
	VADDPD      Z13, Z4, Z4
	VFMADD231PD Z14, Z10, Z5
	VFMADD231PD Z15, Z11, Z6
	VFMADD231PD Z16, Z12, Z7
	VFMADD231PD Z17, Z13, Z8
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JGE         gs512loop

gs512tail:
	TESTQ       CX, CX
	JEQ         gs512done
	VCVTPS2PD   (SI), Z10
	VCVTPS2PD   32(SI), Z11
	VCVTPS2PD   (DI), Z14
	VCVTPS2PD   32(DI), Z15
	VSUBPD      Z31, Z14, Z14
	VSUBPD      Z31, Z15, Z15
	VADDPD      Z10, Z0, Z0
	VADDPD      Z11, Z2, Z2
	VFMADD231PD Z14, Z10, Z5
	VFMADD231PD Z15, Z11, Z6

gs512done:
	VADDPD  Z2, Z0, Z0
	VADDPD  Z4, Z3, Z3
	VADDPD  Z3, Z0, Z0
	VADDPD  Z6, Z5, Z5
	VADDPD  Z8, Z7, Z7
	VADDPD  Z7, Z5, Z5
	HSUM512(Z0, Y0, X0)
	VMOVSD  X0, sg+32(FP)
	VMOVAPD Z5, Z0
	HSUM512(Z0, Y0, X0)
	VMOVSD  X0, sgx+40(FP)
	VZEROUPPER
	RET

// func gradSums256(grad, x *float32, n int, mu float64) (sg, sgx float64)
TEXT ·gradSums256(SB), NOSPLIT, $0-48
	MOVQ         grad+0(FP), SI
	MOVQ         x+8(FP), DI
	MOVQ         n+16(FP), CX
	VBROADCASTSD mu+24(FP), Y15
	VXORPD       Y0, Y0, Y0
	VXORPD       Y2, Y2, Y2
	VXORPD       Y5, Y5, Y5
	VXORPD       Y6, Y6, Y6

gs256loop:
	VCVTPS2PD   (SI), Y10
	VCVTPS2PD   16(SI), Y11
	VCVTPS2PD   (DI), Y12
	VCVTPS2PD   16(DI), Y13
	VSUBPD      Y15, Y12, Y12
	VSUBPD      Y15, Y13, Y13
	VADDPD      Y10, Y0, Y0
	VADDPD      Y11, Y2, Y2
	VFMADD231PD Y12, Y10, Y5
	VFMADD231PD Y13, Y11, Y6
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JGT         gs256loop

	VADDPD  Y2, Y0, Y0
	VADDPD  Y6, Y5, Y5
	HSUM256(Y0, X0)
	VMOVSD  X0, sg+32(FP)
	VMOVAPD Y5, Y0
	HSUM256(Y0, X0)
	VMOVSD  X0, sgx+40(FP)
	VZEROUPPER
	RET

// func normRow512(y, x *float32, n int, mu, a, b float32)
TEXT ·normRow512(SB), NOSPLIT, $0-36
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS mu+24(FP), Z29
	VBROADCASTSS a+28(FP), Z30
	VBROADCASTSS b+32(FP), Z31
	CMPQ         CX, $64
	JLT          nr512one

nr512loop:
	VMOVUPS     (SI), Z0
	VMOVUPS     64(SI), Z1
	VMOVUPS     128(SI), Z2
	VMOVUPS     192(SI), Z3
	VSUBPS      Z29, Z0, Z0
	VSUBPS      Z29, Z1, Z1
	VSUBPS      Z29, Z2, Z2
	VSUBPS      Z29, Z3, Z3
	VFMADD213PS Z31, Z30, Z0
	VFMADD213PS Z31, Z30, Z1
	VFMADD213PS Z31, Z30, Z2
	VFMADD213PS Z31, Z30, Z3
	VMOVUPS     Z0, (DI)
	VMOVUPS     Z1, 64(DI)
	VMOVUPS     Z2, 128(DI)
	VMOVUPS     Z3, 192(DI)
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $64, CX
	CMPQ        CX, $64
	JGE         nr512loop

nr512one:
	TESTQ       CX, CX
	JEQ         nr512done
	VMOVUPS     (SI), Z0
	VSUBPS      Z29, Z0, Z0
	VFMADD213PS Z31, Z30, Z0
	VMOVUPS     Z0, (DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JMP         nr512one

nr512done:
	VZEROUPPER
	RET

// func normRow256(y, x *float32, n int, mu, a, b float32)
TEXT ·normRow256(SB), NOSPLIT, $0-36
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS mu+24(FP), Y13
	VBROADCASTSS a+28(FP), Y14
	VBROADCASTSS b+32(FP), Y15

nr256loop:
	VMOVUPS     (SI), Y0
	VSUBPS      Y13, Y0, Y0
	VFMADD213PS Y15, Y14, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JGT         nr256loop
	VZEROUPPER
	RET

// func normBackRow512(dx, grad, x *float32, n int, mu, a, bc, d float32)
TEXT ·normBackRow512(SB), NOSPLIT, $0-48
	MOVQ         dx+0(FP), DI
	MOVQ         grad+8(FP), DX
	MOVQ         x+16(FP), SI
	MOVQ         n+24(FP), CX
	VBROADCASTSS mu+32(FP), Z28
	VBROADCASTSS a+36(FP), Z29
	VBROADCASTSS bc+40(FP), Z30
	VBROADCASTSS d+44(FP), Z31
	CMPQ         CX, $32
	JLT          nb512one

nb512loop:
	VMOVUPS     (SI), Z0
	VMOVUPS     64(SI), Z1
	VSUBPS      Z28, Z0, Z0
	VSUBPS      Z28, Z1, Z1
	VFMADD213PS Z31, Z30, Z0
	VFMADD213PS Z31, Z30, Z1
	VFMADD231PS (DX), Z29, Z0
	VFMADD231PS 64(DX), Z29, Z1
	VMOVUPS     Z0, (DI)
	VMOVUPS     Z1, 64(DI)
	ADDQ        $128, SI
	ADDQ        $128, DX
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JGE         nb512loop

nb512one:
	TESTQ       CX, CX
	JEQ         nb512done
	VMOVUPS     (SI), Z0
	VSUBPS      Z28, Z0, Z0
	VFMADD213PS Z31, Z30, Z0
	VFMADD231PS (DX), Z29, Z0
	VMOVUPS     Z0, (DI)

nb512done:
	VZEROUPPER
	RET

// func normBackRow256(dx, grad, x *float32, n int, mu, a, bc, d float32)
TEXT ·normBackRow256(SB), NOSPLIT, $0-48
	MOVQ         dx+0(FP), DI
	MOVQ         grad+8(FP), DX
	MOVQ         x+16(FP), SI
	MOVQ         n+24(FP), CX
	VBROADCASTSS mu+32(FP), Y12
	VBROADCASTSS a+36(FP), Y13
	VBROADCASTSS bc+40(FP), Y14
	VBROADCASTSS d+44(FP), Y15

nb256loop:
	VMOVUPS     (SI), Y0
	VSUBPS      Y12, Y0, Y0
	VFMADD213PS Y15, Y14, Y0
	VFMADD231PS (DX), Y13, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DX
	ADDQ        $32, DI
	SUBQ        $8, CX
	JGT         nb256loop
	VZEROUPPER
	RET

// ReLU: VMAXPS with the value as Intel's second operand returns it when it
// is NaN (or when both are zeros); adding +0 then turns −0 into +0.

// func relu512(dst, src *float32, n int)
TEXT ·relu512(SB), NOSPLIT, $0-24
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVQ   n+16(FP), CX
	VXORPS Z31, Z31, Z31
	CMPQ   CX, $64
	JLT    r512one

r512loop:
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	VMOVUPS 128(SI), Z2
	VMOVUPS 192(SI), Z3
	VMAXPS  Z0, Z31, Z0
	VMAXPS  Z1, Z31, Z1
	VMAXPS  Z2, Z31, Z2
	VMAXPS  Z3, Z31, Z3
	VADDPS  Z31, Z0, Z0
	VADDPS  Z31, Z1, Z1
	VADDPS  Z31, Z2, Z2
	VADDPS  Z31, Z3, Z3
	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	VMOVUPS Z2, 128(DI)
	VMOVUPS Z3, 192(DI)
	ADDQ    $256, SI
	ADDQ    $256, DI
	SUBQ    $64, CX
	CMPQ    CX, $64
	JGE     r512loop

r512one:
	TESTQ   CX, CX
	JEQ     r512done
	VMOVUPS (SI), Z0
	VMAXPS  Z0, Z31, Z0
	VADDPS  Z31, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ    $64, SI
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     r512one

r512done:
	VZEROUPPER
	RET

// func relu256(dst, src *float32, n int)
TEXT ·relu256(SB), NOSPLIT, $0-24
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVQ   n+16(FP), CX
	VXORPS Y15, Y15, Y15

r256loop:
	VMOVUPS (SI), Y0
	VMAXPS  Y0, Y15, Y0
	VADDPS  Y15, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JGT     r256loop
	VZEROUPPER
	RET

// ReLU backward: mask = 0 < x (LT_OQ: ordered, quiet, false for NaN), dst = g
// under the mask and +0 elsewhere.

// func reluBack512(dst, grad, x *float32, n int)
TEXT ·reluBack512(SB), NOSPLIT, $0-32
	MOVQ   dst+0(FP), DI
	MOVQ   grad+8(FP), DX
	MOVQ   x+16(FP), SI
	MOVQ   n+24(FP), CX
	VXORPS Z31, Z31, Z31
	CMPQ   CX, $32
	JLT    rb512one

rb512loop:
	VCMPPS    $0x11, (SI), Z31, K1
	VCMPPS    $0x11, 64(SI), Z31, K2
	VMOVUPS.Z (DX), K1, Z0
	VMOVUPS.Z 64(DX), K2, Z1
	VMOVUPS   Z0, (DI)
	VMOVUPS   Z1, 64(DI)
	ADDQ      $128, SI
	ADDQ      $128, DX
	ADDQ      $128, DI
	SUBQ      $32, CX
	CMPQ      CX, $32
	JGE       rb512loop

rb512one:
	TESTQ     CX, CX
	JEQ       rb512done
	VCMPPS    $0x11, (SI), Z31, K1
	VMOVUPS.Z (DX), K1, Z0
	VMOVUPS   Z0, (DI)

rb512done:
	VZEROUPPER
	RET

// func reluBack256(dst, grad, x *float32, n int)
TEXT ·reluBack256(SB), NOSPLIT, $0-32
	MOVQ   dst+0(FP), DI
	MOVQ   grad+8(FP), DX
	MOVQ   x+16(FP), SI
	MOVQ   n+24(FP), CX
	VXORPS Y15, Y15, Y15

rb256loop:
	VCMPPS  $0x11, (SI), Y15, Y0
	VANDPS  (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JGT     rb256loop
	VZEROUPPER
	RET

// func axpy512(a float32, x, y *float32, n int)
TEXT ·axpy512(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Z31
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         n+24(FP), CX
	CMPQ         CX, $32
	JLT          ax512one

ax512loop:
	VMOVUPS     (DI), Z0
	VMOVUPS     64(DI), Z1
	VFMADD231PS (SI), Z31, Z0
	VFMADD231PS 64(SI), Z31, Z1
	VMOVUPS     Z0, (DI)
	VMOVUPS     Z1, 64(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JGE         ax512loop

ax512one:
	TESTQ       CX, CX
	JEQ         ax512done
	VMOVUPS     (DI), Z0
	VFMADD231PS (SI), Z31, Z0
	VMOVUPS     Z0, (DI)

ax512done:
	VZEROUPPER
	RET

// func axpy256(a float32, x, y *float32, n int)
TEXT ·axpy256(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Y15
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         n+24(FP), CX

ax256loop:
	VMOVUPS     (DI), Y0
	VFMADD231PS (SI), Y15, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JGT         ax256loop
	VZEROUPPER
	RET

// func affine512(dst, src *float32, n int, a, b float32)
TEXT ·affine512(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS a+24(FP), Z30
	VBROADCASTSS b+28(FP), Z31
	CMPQ         CX, $32
	JLT          af512one

af512loop:
	VMOVUPS     (SI), Z0
	VMOVUPS     64(SI), Z1
	VFMADD213PS Z31, Z30, Z0
	VFMADD213PS Z31, Z30, Z1
	VMOVUPS     Z0, (DI)
	VMOVUPS     Z1, 64(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JGE         af512loop

af512one:
	TESTQ       CX, CX
	JEQ         af512done
	VMOVUPS     (SI), Z0
	VFMADD213PS Z31, Z30, Z0
	VMOVUPS     Z0, (DI)

af512done:
	VZEROUPPER
	RET

// func affine256(dst, src *float32, n int, a, b float32)
TEXT ·affine256(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS a+24(FP), Y14
	VBROADCASTSS b+28(FP), Y15

af256loop:
	VMOVUPS     (SI), Y0
	VFMADD213PS Y15, Y14, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JGT         af256loop
	VZEROUPPER
	RET

// func fill512(dst *float32, n int, v float32)
TEXT ·fill512(SB), NOSPLIT, $0-20
	MOVQ         dst+0(FP), DI
	MOVQ         n+8(FP), CX
	VBROADCASTSS v+16(FP), Z0
	CMPQ         CX, $64
	JLT          fl512one

fl512loop:
	VMOVUPS Z0, (DI)
	VMOVUPS Z0, 64(DI)
	VMOVUPS Z0, 128(DI)
	VMOVUPS Z0, 192(DI)
	ADDQ    $256, DI
	SUBQ    $64, CX
	CMPQ    CX, $64
	JGE     fl512loop

fl512one:
	TESTQ   CX, CX
	JEQ     fl512done
	VMOVUPS Z0, (DI)
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     fl512one

fl512done:
	VZEROUPPER
	RET

// func fill256(dst *float32, n int, v float32)
TEXT ·fill256(SB), NOSPLIT, $0-20
	MOVQ         dst+0(FP), DI
	MOVQ         n+8(FP), CX
	VBROADCASTSS v+16(FP), Y0

fl256loop:
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	SUBQ    $8, CX
	JGT     fl256loop
	VZEROUPPER
	RET

// Permutation tables for 2×2 pooling: the even and odd positions of a
// 32-float pair of registers, and each of 16 floats duplicated.
DATA poolEven<>+0(SB)/4, $0
DATA poolEven<>+4(SB)/4, $2
DATA poolEven<>+8(SB)/4, $4
DATA poolEven<>+12(SB)/4, $6
DATA poolEven<>+16(SB)/4, $8
DATA poolEven<>+20(SB)/4, $10
DATA poolEven<>+24(SB)/4, $12
DATA poolEven<>+28(SB)/4, $14
DATA poolEven<>+32(SB)/4, $16
DATA poolEven<>+36(SB)/4, $18
DATA poolEven<>+40(SB)/4, $20
DATA poolEven<>+44(SB)/4, $22
DATA poolEven<>+48(SB)/4, $24
DATA poolEven<>+52(SB)/4, $26
DATA poolEven<>+56(SB)/4, $28
DATA poolEven<>+60(SB)/4, $30
GLOBL poolEven<>(SB), RODATA|NOPTR, $64

DATA poolOdd<>+0(SB)/4, $1
DATA poolOdd<>+4(SB)/4, $3
DATA poolOdd<>+8(SB)/4, $5
DATA poolOdd<>+12(SB)/4, $7
DATA poolOdd<>+16(SB)/4, $9
DATA poolOdd<>+20(SB)/4, $11
DATA poolOdd<>+24(SB)/4, $13
DATA poolOdd<>+28(SB)/4, $15
DATA poolOdd<>+32(SB)/4, $17
DATA poolOdd<>+36(SB)/4, $19
DATA poolOdd<>+40(SB)/4, $21
DATA poolOdd<>+44(SB)/4, $23
DATA poolOdd<>+48(SB)/4, $25
DATA poolOdd<>+52(SB)/4, $27
DATA poolOdd<>+56(SB)/4, $29
DATA poolOdd<>+60(SB)/4, $31
GLOBL poolOdd<>(SB), RODATA|NOPTR, $64

DATA poolDupLo<>+0(SB)/4, $0
DATA poolDupLo<>+4(SB)/4, $0
DATA poolDupLo<>+8(SB)/4, $1
DATA poolDupLo<>+12(SB)/4, $1
DATA poolDupLo<>+16(SB)/4, $2
DATA poolDupLo<>+20(SB)/4, $2
DATA poolDupLo<>+24(SB)/4, $3
DATA poolDupLo<>+28(SB)/4, $3
DATA poolDupLo<>+32(SB)/4, $4
DATA poolDupLo<>+36(SB)/4, $4
DATA poolDupLo<>+40(SB)/4, $5
DATA poolDupLo<>+44(SB)/4, $5
DATA poolDupLo<>+48(SB)/4, $6
DATA poolDupLo<>+52(SB)/4, $6
DATA poolDupLo<>+56(SB)/4, $7
DATA poolDupLo<>+60(SB)/4, $7
GLOBL poolDupLo<>(SB), RODATA|NOPTR, $64

DATA poolDupHi<>+0(SB)/4, $8
DATA poolDupHi<>+4(SB)/4, $8
DATA poolDupHi<>+8(SB)/4, $9
DATA poolDupHi<>+12(SB)/4, $9
DATA poolDupHi<>+16(SB)/4, $10
DATA poolDupHi<>+20(SB)/4, $10
DATA poolDupHi<>+24(SB)/4, $11
DATA poolDupHi<>+28(SB)/4, $11
DATA poolDupHi<>+32(SB)/4, $12
DATA poolDupHi<>+36(SB)/4, $12
DATA poolDupHi<>+40(SB)/4, $13
DATA poolDupHi<>+44(SB)/4, $13
DATA poolDupHi<>+48(SB)/4, $14
DATA poolDupHi<>+52(SB)/4, $14
DATA poolDupHi<>+56(SB)/4, $15
DATA poolDupHi<>+60(SB)/4, $15
GLOBL poolDupHi<>(SB), RODATA|NOPTR, $64

// POOLMASKS sets, for a row of w (DX) inputs whose last t = w mod 32 (AX)
// do not fill a 32-float chunk: K1 = min(t, 16) low bits, K2 = t − min(t,
// 16) low bits, K3 = t/2 low bits. Clobbers BX, CX, R9.
#define POOLMASKS \
	MOVQ  DX, AX; \
	ANDQ  $31, AX; \
	MOVQ  AX, BX; \
	CMPQ  BX, $16; \
	JLE   2(PC); \
	MOVQ  $16, BX; \
	MOVQ  $1, R9; \
	MOVQ  BX, CX; \
	SHLQ  CX, R9; \
	DECQ  R9; \
	KMOVW R9, K1; \
	MOVQ  AX, CX; \
	SUBQ  BX, CX; \
	MOVQ  $1, R9; \
	SHLQ  CX, R9; \
	DECQ  R9; \
	KMOVW R9, K2; \
	MOVQ  AX, CX; \
	SHRQ  $1, CX; \
	MOVQ  $1, R9; \
	SHLQ  CX, R9; \
	DECQ  R9; \
	KMOVW R9, K3

// func avgPool2x2F512(dst, src *float32, w, rows int, inv float32)
TEXT ·avgPool2x2F512(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         rows+24(FP), R8
	VBROADCASTSS inv+32(FP), Z31
	VMOVUPS      poolEven<>(SB), Z29
	VMOVUPS      poolOdd<>(SB), Z30
	POOLMASKS
	MOVQ         DX, R10
	SHLQ         $2, R10         // bytes per input row
	MOVQ         DX, BX
	SHLQ         $1, BX          // bytes per output row
	MOVQ         DX, R11
	SUBQ         AX, R11         // inputs per row in whole chunks

pfrow:
	MOVQ SI, R12
	LEAQ (SI)(R10*1), R13
	MOVQ DI, R14
	MOVQ R11, CX

pfchunk:
	TESTQ     CX, CX
	JEQ       pftail
	VMOVUPS   (R12), Z0
	VMOVUPS   64(R12), Z1
	VADDPS    (R13), Z0, Z0
	VADDPS    64(R13), Z1, Z1
	VMOVAPS   Z0, Z2
	VPERMT2PS Z1, Z29, Z2
	VPERMT2PS Z1, Z30, Z0
	VADDPS    Z2, Z0, Z0
	VMULPS    Z31, Z0, Z0
	VMOVUPS   Z0, (R14)
	ADDQ      $128, R12
	ADDQ      $128, R13
	ADDQ      $64, R14
	SUBQ      $32, CX
	JMP       pfchunk

pftail:
	TESTQ     AX, AX
	JEQ       pfnext
	VMOVUPS.Z (R12), K1, Z0
	VMOVUPS.Z 64(R12), K2, Z1
	VMOVUPS.Z (R13), K1, Z3
	VMOVUPS.Z 64(R13), K2, Z4
	VADDPS    Z3, Z0, Z0
	VADDPS    Z4, Z1, Z1
	VMOVAPS   Z0, Z2
	VPERMT2PS Z1, Z29, Z2
	VPERMT2PS Z1, Z30, Z0
	VADDPS    Z2, Z0, Z0
	VMULPS    Z31, Z0, Z0
	VMOVUPS   Z0, K3, (R14)

pfnext:
	LEAQ (SI)(R10*2), SI
	ADDQ BX, DI
	DECQ R8
	JNZ  pfrow
	VZEROUPPER
	RET

// func avgPool2x2B512(dst, grad *float32, w, rows int, inv float32)
TEXT ·avgPool2x2B512(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         grad+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         rows+24(FP), R8
	VBROADCASTSS inv+32(FP), Z31
	VMOVUPS      poolDupLo<>(SB), Z29
	VMOVUPS      poolDupHi<>(SB), Z30
	POOLMASKS
	MOVQ         DX, R10
	SHLQ         $2, R10         // bytes per dst row
	MOVQ         DX, BX
	SHLQ         $1, BX          // bytes per g row
	MOVQ         DX, R11
	SUBQ         AX, R11

pbrow:
	MOVQ DI, R12
	LEAQ (DI)(R10*1), R13
	MOVQ SI, R14
	MOVQ R11, CX

pbchunk:
	TESTQ   CX, CX
	JEQ     pbtail
	VMULPS  (R14), Z31, Z0
	VPERMPS Z0, Z29, Z1
	VPERMPS Z0, Z30, Z2
	VMOVUPS Z1, (R12)
	VMOVUPS Z2, 64(R12)
	VMOVUPS Z1, (R13)
	VMOVUPS Z2, 64(R13)
	ADDQ    $128, R12
	ADDQ    $128, R13
	ADDQ    $64, R14
	SUBQ    $32, CX
	JMP     pbchunk

pbtail:
	TESTQ     AX, AX
	JEQ       pbnext
	VMOVUPS.Z (R14), K3, Z0
	VMULPS    Z31, Z0, Z0
	VPERMPS   Z0, Z29, Z1
	VPERMPS   Z0, Z30, Z2
	VMOVUPS   Z1, K1, (R12)
	VMOVUPS   Z2, K2, 64(R12)
	VMOVUPS   Z1, K1, (R13)
	VMOVUPS   Z2, K2, 64(R13)

pbnext:
	LEAQ (DI)(R10*2), DI
	ADDQ BX, SI
	DECQ R8
	JNZ  pbrow
	VZEROUPPER
	RET

// func avgPool2x2BNT512(dst, grad *float32, w, rows int, inv float32)
// avgPool2x2B512 with non-temporal stores, for w a multiple of 32 and dst
// 64-byte aligned: large outputs skip the read-for-ownership of every line.
TEXT ·avgPool2x2BNT512(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         grad+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         rows+24(FP), R8
	VBROADCASTSS inv+32(FP), Z31
	VMOVUPS      poolDupLo<>(SB), Z29
	VMOVUPS      poolDupHi<>(SB), Z30
	MOVQ         DX, R10
	SHLQ         $2, R10         // bytes per dst row

pnrow:
	MOVQ DI, R12
	LEAQ (DI)(R10*1), R13
	MOVQ DX, CX

pnchunk:
	VMULPS   (SI), Z31, Z0
	VPERMPS  Z0, Z29, Z1
	VPERMPS  Z0, Z30, Z2
	VMOVNTPS Z1, (R12)
	VMOVNTPS Z2, 64(R12)
	VMOVNTPS Z1, (R13)
	VMOVNTPS Z2, 64(R13)
	ADDQ     $128, R12
	ADDQ     $128, R13
	ADDQ     $64, SI
	SUBQ     $32, CX
	JNZ      pnchunk

	LEAQ (DI)(R10*2), DI
	DECQ R8
	JNZ  pnrow
	SFENCE
	VZEROUPPER
	RET

// func weightedRows512(dst, rows *float32, ld int, w *float32, k, n int, b float32, bias int)
// dst[0:n] = Σ_{j<k} w[j]·rows[j·ld : j·ld+n] (+ b when bias != 0), with the
// first term a product and the others fused multiply-adds in j order; n is a
// multiple of 16 and k ≥ 1.
TEXT ·weightedRows512(SB), NOSPLIT, $0-64
	MOVQ         dst+0(FP), DI
	MOVQ         rows+8(FP), SI
	MOVQ         ld+16(FP), R8
	SHLQ         $2, R8
	MOVQ         w+24(FP), R9
	MOVQ         k+32(FP), R10
	MOVQ         n+40(FP), CX
	VBROADCASTSS b+48(FP), Z30
	MOVQ         bias+56(FP), R11

wr512loop:
	CMPQ         CX, $32
	JLT          wr512one
	VBROADCASTSS (R9), Z2
	VMULPS       (SI), Z2, Z0
	VMULPS       64(SI), Z2, Z1
	MOVQ         SI, AX
	MOVQ         R9, DX
	MOVQ         R10, BX
	DECQ         BX
	JZ           wr512bias

wr512k:
	ADDQ         R8, AX
	ADDQ         $4, DX
	VBROADCASTSS (DX), Z2
	VFMADD231PS  (AX), Z2, Z0
	VFMADD231PS  64(AX), Z2, Z1
	DECQ         BX
	JNZ          wr512k

wr512bias:
	TESTQ        R11, R11
	JZ           wr512store
	VADDPS       Z30, Z0, Z0
	VADDPS       Z30, Z1, Z1

wr512store:
	VMOVUPS      Z0, (DI)
	VMOVUPS      Z1, 64(DI)
	ADDQ         $128, SI
	ADDQ         $128, DI
	SUBQ         $32, CX
	JMP          wr512loop

wr512one:
	TESTQ        CX, CX
	JEQ          wr512done
	VBROADCASTSS (R9), Z2
	VMULPS       (SI), Z2, Z0
	MOVQ         SI, AX
	MOVQ         R9, DX
	MOVQ         R10, BX
	DECQ         BX
	JZ           wr512bias1

wr512k1:
	ADDQ         R8, AX
	ADDQ         $4, DX
	VBROADCASTSS (DX), Z2
	VFMADD231PS  (AX), Z2, Z0
	DECQ         BX
	JNZ          wr512k1

wr512bias1:
	TESTQ        R11, R11
	JZ           wr512store1
	VADDPS       Z30, Z0, Z0

wr512store1:
	VMOVUPS      Z0, (DI)

wr512done:
	VZEROUPPER
	RET

// Permutations of winogradInput512: lane tx takes lane 2tx (E, poolEven),
// 2tx+1 (O, poolOdd), 2tx−1 (Om, lane 0 masked) or 2tx+2 (E2, lane 7
// masked) of a row; lanes 8 and up are never stored.
DATA winoOm<>+0(SB)/4, $0
DATA winoOm<>+4(SB)/4, $1
DATA winoOm<>+8(SB)/4, $3
DATA winoOm<>+12(SB)/4, $5
DATA winoOm<>+16(SB)/4, $7
DATA winoOm<>+20(SB)/4, $9
DATA winoOm<>+24(SB)/4, $11
DATA winoOm<>+28(SB)/4, $13
GLOBL winoOm<>(SB), RODATA|NOPTR, $64

DATA winoE2<>+0(SB)/4, $2
DATA winoE2<>+4(SB)/4, $4
DATA winoE2<>+8(SB)/4, $6
DATA winoE2<>+12(SB)/4, $8
DATA winoE2<>+16(SB)/4, $10
DATA winoE2<>+20(SB)/4, $12
DATA winoE2<>+24(SB)/4, $14
DATA winoE2<>+28(SB)/4, $0
GLOBL winoE2<>(SB), RODATA|NOPTR, $64

// One row a of Bᵀ d, as four tile columns: B applied to lanes 2tx−1 …
// 2tx+2 of a for every tile tx, stored (mask K2) into the four planes at
// R9, R9+R8, R9+2·R8, R9+R12; R9 then moves on four planes (R13).
#define WINOCOLS(a) \
	VPERMPS   a, Z24, Z8; \
	VPERMPS   a, Z25, Z9; \
	VPERMPS.Z a, Z26, K3, Z10; \
	VPERMPS.Z a, Z27, K4, Z11; \
	VSUBPS    Z9, Z10, Z12; \
	VADDPS    Z9, Z8, Z13; \
	VSUBPS    Z8, Z9, Z14; \
	VSUBPS    Z11, Z8, Z15; \
	VMOVUPS   Z12, K2, (R9); \
	VMOVUPS   Z13, K2, (R9)(R8*1); \
	VMOVUPS   Z14, K2, (R9)(R8*2); \
	VMOVUPS   Z15, K2, (R9)(R12*1); \
	ADDQ      R13, R9

// func winogradInput512(v *float32, stride int, x *float32, h, w, kload, kstore int)
//
// Strip by strip (input rows 2ty−1 … 2ty+2, zero outside the plane), the
// rows of Bᵀ d are formed whole (one row of the plane per register, w ≤
// 16), then B is applied to each tile's four columns through permutes.
TEXT ·winogradInput512(SB), NOSPLIT, $0-56
	MOVQ     v+0(FP), DI
	MOVQ     stride+8(FP), R8
	MOVQ     x+16(FP), SI
	MOVQ     h+24(FP), CX   // rows from row 2ty to the end
	MOVQ     w+32(FP), BX
	MOVQ     kload+40(FP), AX
	KMOVW    AX, K1
	MOVQ     kstore+48(FP), AX
	KMOVW    AX, K2
	MOVL     $0xfffe, AX
	KMOVW    AX, K3
	MOVL     $0x7f, AX
	KMOVW    AX, K4
	LEAQ     1(BX), R14
	SHRQ     $1, R14
	SHLQ     $2, R14        // bytes per strip of tiles in a plane
	SHLQ     $2, BX         // bytes per row of x
	SHLQ     $2, R8         // bytes between planes
	LEAQ     (R8)(R8*2), R12
	MOVQ     R8, R13
	SHLQ     $2, R13
	VMOVUPS  poolEven<>(SB), Z24
	VMOVUPS  poolOdd<>(SB), Z25
	VMOVUPS  winoOm<>(SB), Z26
	VMOVUPS  winoE2<>(SB), Z27
	VPXORD   Z0, Z0, Z0     // row 2ty−1: zero above the plane

wistrip:
	VMOVUPS.Z (SI), K1, Z1
	VPXORD    Z2, Z2, Z2
	VPXORD    Z3, Z3, Z3
	CMPQ      CX, $2
	JLT       wirows
	VMOVUPS.Z (SI)(BX*1), K1, Z2
	CMPQ      CX, $3
	JLT       wirows
	VMOVUPS.Z (SI)(BX*2), K1, Z3

wirows:
	VSUBPS   Z2, Z0, Z4     // d0 − d2
	VADDPS   Z2, Z1, Z5     // d1 + d2
	VSUBPS   Z1, Z2, Z6     // d2 − d1
	VSUBPS   Z3, Z1, Z7     // d1 − d3
	MOVQ     DI, R9
	WINOCOLS(Z4)
	WINOCOLS(Z5)
	WINOCOLS(Z6)
	WINOCOLS(Z7)
	VMOVAPS  Z2, Z0         // the next strip's first row
	ADDQ     R14, DI
	LEAQ     (SI)(BX*2), SI
	SUBQ     $2, CX
	JGT      wistrip
	VZEROUPPER
	RET
