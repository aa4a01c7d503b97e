// The AVX-512 dense kernel's tiles, declared in native_conv.h (native::AsmTile):
//
//   void modex_f32_tile_{12,10,8,6}x32_avx512(const AsmTile* t);
//
// For the R = 12, 10, 8 or 6 rows r of one output tile of a panel pair (32 columns):
//   c[r][0 .. 32) = clamp(init + sum over s < segments, k < K of a[r][s * stride + k] * b[32 (s K + k) ..],
//                         lo, hi)
// where init is the bias (t->bias set) or c's row itself (t->bias null: a later K block), plus
// the residual's row where t->residual is set (a fused Add, rows ldc apart as c's). Only
// rows r < t->rows are read and written; the columns past 16 + popcount(mask) are neither. Where
// the bias starts a tile, its lines of c are first asked for with intent to write. The pf_lines
// 64-byte lines from pf on (pf_lines <= K / 2) are prefetched into L2, one per two k of the first
// segment: the caller's share of the B it multiplies next.
//
// In assembly because the 12-row tile needs every general register (12 row pointers, B, one
// index shared by all rows), which GCC does not manage: it parked row pointers in vector
// registers and moved them back on every k, through the ports the FMAs use (162 -> 184 GFLOP/s
// of one core's 211, alone, L1-resident, K = 256), and a C++ frame around an assembly loop paid a
// store and reload of the accumulators per call (~1/6 of a call at K = 64).
//
// zmm0..zmm(2R - 1): the accumulators, row r in zmm(2r) (columns 0..15) and zmm(2r + 1) (16..31).
// zmm24, zmm25: B's row k (and at the ends bias, lo, hi). zmm26..zmm31: A's broadcasts, in turn.
// k1: the mask of the columns 16..31 that exist.
// Each row pointer is moved past its segment's end and indexed by rdi, which counts from -4K up to
// 0 in bytes, so one add steps every row. Row r's pointer lives in the r-th of
// rbx rbp r10 r11 r12 r13 r14 r15 rcx rax r9 rsi.

// AsmTile's fields (bytes).
#define T_A 0
#define T_B 8
#define T_C 16
#define T_LDC 24
#define T_BIAS 32
#define T_K 40
#define T_ROWS 48
#define T_SEGMENTS 56
#define T_STRIDE 64
#define T_PF 72
#define T_PF_LINES 80
#define T_LO 88
#define T_HI 92
#define T_MASK 96
#define T_RESIDUAL 104

// Locals (bytes from rsp).
#define L_PF_END 0      // the index where the prefetching loop ends: 4 (2 pf_lines - K)
#define L_TILE 8        // the AsmTile
#define L_START 16      // the index a segment starts at: -4K
#define L_LEFT 24       // segments left
#define L_STRIDE 32     // the segment stride in bytes
#define L_SIZE 40

        .text

// (Macro names must not be mnemonics: the assembler matches them without regard to case, so a
// macro called ADD or PUSH would take the place of the instruction inside every macro.)

// One row of A at k: broadcast a[r][k], multiply-add into the row's two accumulators.
.macro ROW ptr, off, acc0, acc1, t
        vbroadcastss \off(\ptr,%rdi), %zmm\t
        vfmadd231ps  %zmm24, %zmm\t, %zmm\acc0
        vfmadd231ps  %zmm25, %zmm\t, %zmm\acc1
.endm

// One k for R rows: B's row (at boff bytes from rdx), then the rows (A at off bytes past rdi).
.macro STEP R, off, boff
        vmovaps \boff(%rdx), %zmm24
        vmovaps \boff+64(%rdx), %zmm25
        ROW %rbx, \off, 0, 1, 26
        ROW %rbp, \off, 2, 3, 27
        ROW %r10, \off, 4, 5, 28
        ROW %r11, \off, 6, 7, 29
        ROW %r12, \off, 8, 9, 30
        ROW %r13, \off, 10, 11, 31
.if \R > 6
        ROW %r14, \off, 12, 13, 26
        ROW %r15, \off, 14, 15, 27
.endif
.if \R > 8
        ROW %rcx, \off, 16, 17, 28
        ROW %rax, \off, 18, 19, 29
.endif
.if \R > 10
        ROW %r9, \off, 20, 21, 30
        ROW %rsi, \off, 22, 23, 31
.endif
.endm

// Row i's pointer into reg, moved past the segment's end (rdi holds 4K).
.macro POINTER i, reg
        mov     8*\i(%rsi), \reg
        add     %rdi, \reg
.endm

// One row's operation on the rows at r9 (ldc = rdx apart), for rows r < r8 only: from the first
// row r >= r8 on, a jump to the next label 8 after the sequence. ask: c's two lines asked for
// with intent to write; load: c's row into the accumulators (columns past the mask zero); fetch:
// the residual's two lines prefetched; add: the residual's row added; store: the accumulators
// stored (columns past the mask left).
.macro ROW_OP kind, R, r, acc0, acc1
.if \r < \R
        cmp     $\r, %r8
        jle     8f
.ifc \kind, ask
        prefetchw (%r9)
        prefetchw 64(%r9)
.endif
.ifc \kind, load
        vmovups (%r9), %zmm\acc0
        vmovups 64(%r9), %zmm\acc1{%k1}{z}
.endif
.ifc \kind, fetch
        prefetcht0 (%r9)
        prefetcht0 64(%r9)
.endif
.ifc \kind, add
        vaddps  (%r9), %zmm\acc0, %zmm\acc0
        vaddps  64(%r9), %zmm\acc1, %zmm\acc1{%k1}
.endif
.ifc \kind, store
        vmovups %zmm\acc0, (%r9)
        vmovups %zmm\acc1, 64(%r9){%k1}
.endif
        add     %rdx, %r9
.endif
.endm
.macro EACH_ROW kind, R
        ROW_OP  \kind, \R, 0, 0, 1
        ROW_OP  \kind, \R, 1, 2, 3
        ROW_OP  \kind, \R, 2, 4, 5
        ROW_OP  \kind, \R, 3, 6, 7
        ROW_OP  \kind, \R, 4, 8, 9
        ROW_OP  \kind, \R, 5, 10, 11
        ROW_OP  \kind, \R, 6, 12, 13
        ROW_OP  \kind, \R, 7, 14, 15
        ROW_OP  \kind, \R, 8, 16, 17
        ROW_OP  \kind, \R, 9, 18, 19
        ROW_OP  \kind, \R, 10, 20, 21
        ROW_OP  \kind, \R, 11, 22, 23
.endm

// Saving and restoring a callee-saved register, with the unwind information that lets debuggers
// and profilers walk the stack through a tile.
.macro SAVE reg
        push    \reg
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset \reg, 0
.endm
.macro RESTORE reg
        pop     \reg
        .cfi_adjust_cfa_offset -8
        .cfi_restore \reg
.endm

// EACH_ROW over the residual's rows (rdi = the AsmTile), if it has one.
.macro RESIDUAL_ROWS kind, R
        mov     T_RESIDUAL(%rdi), %r9
        test    %r9, %r9
        jz      8f
        mov     T_LDC(%rdi), %rdx
        mov     T_ROWS(%rdi), %r8
        EACH_ROW \kind, \R
8:
.endm

.macro TILE R, name
        .globl  \name
        .hidden \name
        .type   \name, @function
        .p2align 5
\name:
        .cfi_startproc
        SAVE    %rbx
        SAVE    %rbp
        SAVE    %r12
        SAVE    %r13
        SAVE    %r14
        SAVE    %r15
        sub     $L_SIZE, %rsp
        .cfi_adjust_cfa_offset L_SIZE
        mov     %rdi, L_TILE(%rsp)
        mov     T_MASK(%rdi), %rax
        kmovw   %eax, %k1
        mov     T_C(%rdi), %r9
        mov     T_LDC(%rdi), %rdx
        mov     T_ROWS(%rdi), %r8
        mov     T_BIAS(%rdi), %rax
        test    %rax, %rax
        jz      1f
        // The bias in every row; c's lines asked for.
        vmovups (%rax), %zmm24
        vmovups 64(%rax), %zmm25
        .irp i, 0,2,4,6,8,10,12,14,16,18,20,22
        .if \i < 2*\R
        vmovaps %zmm24, %zmm\i
        .endif
        .endr
        .irp i, 1,3,5,7,9,11,13,15,17,19,21,23
        .if \i < 2*\R
        vmovaps %zmm25, %zmm\i
        .endif
        .endr
        EACH_ROW ask, \R
8:
        jmp     2f
1:
        // c's rows (zero past rows).
        .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .if \i < 2*\R
        vpxord  %zmm\i, %zmm\i, %zmm\i
        .endif
        .endr
        EACH_ROW load, \R
8:
2:
        // The residual's lines asked for now, to be in L1 by the end.
        RESIDUAL_ROWS fetch, \R
        mov     T_SEGMENTS(%rdi), %rax
        mov     %rax, L_LEFT(%rsp)
        mov     T_STRIDE(%rdi), %rax
        shl     $2, %rax
        mov     %rax, L_STRIDE(%rsp)
        mov     T_PF(%rdi), %r8
        mov     T_PF_LINES(%rdi), %rax
        add     %rax, %rax
        sub     T_K(%rdi), %rax
        shl     $2, %rax
        mov     %rax, L_PF_END(%rsp)
        mov     T_B(%rdi), %rdx
        mov     T_A(%rdi), %rsi
        mov     T_K(%rdi), %rdi
        shl     $2, %rdi
        POINTER 0, %rbx
        POINTER 1, %rbp
        POINTER 2, %r10
        POINTER 3, %r11
        POINTER 4, %r12
        POINTER 5, %r13
.if \R > 6
        POINTER 6, %r14
        POINTER 7, %r15
.endif
.if \R > 8
        POINTER 8, %rcx
        POINTER 9, %rax
.endif
.if \R > 10
        POINTER 10, %r9
        POINTER 11, %rsi                // a itself, read last
.endif
        neg     %rdi
        mov     %rdi, L_START(%rsp)
6:
        // k < 2 pf_lines: two k at a time, prefetching one line of the next B into L2 (two per
        // k, bunched at the start, stalled the loop on the fill buffers: 23% of resnet50's time
        // in this kernel went to the 1/8 of its k that prefetched).
        cmp     L_PF_END(%rsp), %rdi
        jge     2f
1:
        prefetcht1 0(%r8)
        add     $64, %r8
        STEP    \R, 0, 0
        STEP    \R, 4, 128
        add     $256, %rdx
        add     $8, %rdi
        cmp     L_PF_END(%rsp), %rdi
        jl      1b
2:
        // The rest two k at a time, then a last odd one.
        cmp     $-8, %rdi
        jg      4f
3:
        STEP    \R, 0, 0
        STEP    \R, 4, 128
        add     $256, %rdx
        add     $8, %rdi
        cmp     $-8, %rdi
        jle     3b
4:
        test    %rdi, %rdi
        jz      5f
        STEP    \R, 0, 0
        add     $128, %rdx
5:
        // The next segment, if any: every row pointer a stride on, the index back to the start,
        // no more prefetching; B goes on where it is.
        decq    L_LEFT(%rsp)
        jle     7f
        mov     L_STRIDE(%rsp), %rdi
        add     %rdi, %rbx
        add     %rdi, %rbp
        add     %rdi, %r10
        add     %rdi, %r11
        add     %rdi, %r12
        add     %rdi, %r13
.if \R > 6
        add     %rdi, %r14
        add     %rdi, %r15
.endif
.if \R > 8
        add     %rdi, %rcx
        add     %rdi, %rax
.endif
.if \R > 10
        add     %rdi, %r9
        add     %rdi, %rsi
.endif
        mov     L_START(%rsp), %rdi
        mov     %rdi, L_PF_END(%rsp)
        jmp     6b
7:
        // The residual's rows < rows added, clamp, store rows < rows.
        mov     L_TILE(%rsp), %rdi
        RESIDUAL_ROWS add, \R
        vbroadcastss T_LO(%rdi), %zmm24
        vbroadcastss T_HI(%rdi), %zmm25
        .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .if \i < 2*\R
        vmaxps  %zmm24, %zmm\i, %zmm\i
        vminps  %zmm25, %zmm\i, %zmm\i
        .endif
        .endr
        mov     T_C(%rdi), %r9
        mov     T_LDC(%rdi), %rdx
        mov     T_ROWS(%rdi), %r8
        EACH_ROW store, \R
8:
        add     $L_SIZE, %rsp
        .cfi_adjust_cfa_offset -L_SIZE
        RESTORE %r15
        RESTORE %r14
        RESTORE %r13
        RESTORE %r12
        RESTORE %rbp
        RESTORE %rbx
        vzeroupper
        ret
        .cfi_endproc
        .size   \name, .-\name
.endm

        TILE    12, modex_f32_tile_12x32_avx512
        TILE    10, modex_f32_tile_10x32_avx512
        TILE    8, modex_f32_tile_8x32_avx512
        TILE    6, modex_f32_tile_6x32_avx512

        .section .note.GNU-stack, "", @progbits
