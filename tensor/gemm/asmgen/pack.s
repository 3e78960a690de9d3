
// func packBNCopy(dst, src *float32, lds, kc, panels, nr int)
// For p in [0, kc) and panel q in [0, panels), copies the nr floats at
// src[p*lds+q*nr:] to dst[q*kc*nr+p*nr:]. nr must be a multiple of 8.
TEXT ·packBNCopy(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ lds+16(FP), R8
	SHLQ $2, R8
	MOVQ kc+24(FP), CX
	MOVQ panels+32(FP), R9
	MOVQ nr+40(FP), R10
	MOVQ R10, R11
	IMULQ CX, R11
	SHLQ $2, R11 // panel stride in bytes
	SHLQ $2, R10 // row bytes
	TESTQ CX, CX
	JZ nndone
	TESTQ R9, R9
	JZ nndone
nnrow:
	MOVQ SI, AX // source walk along the row
	MOVQ DI, BX // destination row in panel 0
	MOVQ R9, DX
nnpanel:
	XORQ R12, R12
nnvec:
	VMOVUPS (AX)(R12*1), Y0
	VMOVUPS Y0, (BX)(R12*1)
	ADDQ $32, R12
	CMPQ R12, R10
	JLT nnvec
	ADDQ R10, AX
	ADDQ R11, BX
	DECQ DX
	JNZ nnpanel
	ADDQ R8, SI
	ADDQ R10, DI
	DECQ CX
	JNZ nnrow
nndone:
	VZEROUPPER
	RET

// func transpose8(dst, src *float32, lds, kc, ldd, blocks int)
// Transposes: dst[p*ldd+j] = src[j*lds+p] for j in [0, 8*blocks),
// p in [0, kc&^7), in 8×8 blocks; the kc%8 tail is left to Go.
TEXT ·transpose8(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ lds+16(FP), R8
	SHLQ $2, R8
	MOVQ kc+24(FP), CX
	SHRQ $3, CX
	JZ tdone
	MOVQ ldd+32(FP), R10
	SHLQ $2, R10 // dst row bytes
	LEAQ (R8)(R8*2), R9 // 3*lds
	LEAQ (R10)(R10*2), R11 // 3*ldd bytes
	MOVQ blocks+40(FP), R14
	TESTQ R14, R14
	JZ tdone
tjblock:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ CX, DX
	LEAQ (AX)(R8*4), R12 // source rows 4..7
	LEAQ (BX)(R10*4), R13 // destination rows 4..7
tpblock:
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R8*1), Y1
	VMOVUPS (AX)(R8*2), Y2
	VMOVUPS (AX)(R9*1), Y3
	VMOVUPS (R12), Y4
	VMOVUPS (R12)(R8*1), Y5
	VMOVUPS (R12)(R8*2), Y6
	VMOVUPS (R12)(R9*1), Y7
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15
	VMOVUPS Y8, (BX)
	VMOVUPS Y9, (BX)(R10*1)
	VMOVUPS Y10, (BX)(R10*2)
	VMOVUPS Y11, (BX)(R11*1)
	VMOVUPS Y12, (R13)
	VMOVUPS Y13, (R13)(R10*1)
	VMOVUPS Y14, (R13)(R10*2)
	VMOVUPS Y15, (R13)(R11*1)
	ADDQ $32, AX
	ADDQ $32, R12
	LEAQ (BX)(R10*8), BX
	LEAQ (R13)(R10*8), R13
	DECQ DX
	JNZ tpblock
	LEAQ (SI)(R8*8), SI
	ADDQ $32, DI
	DECQ R14
	JNZ tjblock
tdone:
	VZEROUPPER
	RET
