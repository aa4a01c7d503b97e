// The AVX-512 dense kernel's inner loops, declared in native_conv.h:
//
//   void modex_f32_gemm_{12,10,8}x32_avx512(int64_t K, const float* const* a, const float* b,
//                                           float* tile, const float* pf, int64_t pf_k);
//
// tile[r][0 .. 32) += sum over k < K of a[r][k] * b[32k .. 32k + 32), for the R = 12, 10 or 8
// rows r. Written in assembly because the 12-row tile needs every general register: 12 row
// pointers, B and one index shared by all rows, which GCC does not manage (it parks row pointers
// in vector registers and moves them back on every k, through the ports the FMAs use).
//
// Registers (System V): rdi = K, rsi = a, rdx = b, rcx = tile, r8 = pf, r9 = pf_k.
// zmm0..zmm(2R - 1): the accumulators, row r in zmm(2r) (columns 0..15) and zmm(2r + 1) (16..31).
// zmm24, zmm25: B's row k. zmm26..zmm31: the broadcasts of A, in rotation.
// Each row pointer is moved past its row's end and indexed by rdi, which counts from -4K up to 0
// in bytes, so one add steps every row. Row r's pointer lives in the r-th of
// rbx rbp r10 r11 r12 r13 r14 r15 rcx rax r9 rsi.

        .text

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
        ROW %r14, \off, 12, 13, 26
        ROW %r15, \off, 14, 15, 27
.if \R > 8
        ROW %rcx, \off, 16, 17, 28
        ROW %rax, \off, 18, 19, 29
.endif
.if \R > 10
        ROW %r9, \off, 20, 21, 30
        ROW %rsi, \off, 22, 23, 31
.endif
.endm

// Row i's pointer into reg, moved past the row's end (rdi holds 4K).
.macro POINTER i, reg
        mov     8*\i(%rsi), \reg
        add     %rdi, \reg
.endm

.macro GEMM R, name
        .globl  \name
        .hidden \name
        .type   \name, @function
        .p2align 5
\name:
        push    %rbx
        push    %rbp
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        push    %rcx                    // 8(%rsp): tile
        // The index where the prefetching loop ends: 4 (pf_k - K), kept at 0(%rsp).
        mov     %r9, %rax
        sub     %rdi, %rax
        shl     $2, %rax
        push    %rax

        .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .if \i < 2*\R
        vmovups 64*\i(%rcx), %zmm\i
        .endif
        .endr

        shl     $2, %rdi
        POINTER 0, %rbx
        POINTER 1, %rbp
        POINTER 2, %r10
        POINTER 3, %r11
        POINTER 4, %r12
        POINTER 5, %r13
        POINTER 6, %r14
        POINTER 7, %r15
.if \R > 8
        POINTER 8, %rcx
        POINTER 9, %rax
.endif
.if \R > 10
        POINTER 10, %r9
        POINTER 11, %rsi                // a itself, read last
.endif
        neg     %rdi

        // k < pf_k: one k at a time, prefetching two lines of the next panels into L2.
        cmp     0(%rsp), %rdi
        jge     2f
1:
        prefetcht1 0(%r8)
        prefetcht1 64(%r8)
        add     $128, %r8
        STEP    \R, 0, 0
        add     $128, %rdx
        add     $4, %rdi
        cmp     0(%rsp), %rdi
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
5:
        mov     8(%rsp), %rcx
        .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .if \i < 2*\R
        vmovups %zmm\i, 64*\i(%rcx)
        .endif
        .endr
        add     $16, %rsp
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %rbp
        pop     %rbx
        vzeroupper
        ret
        .size   \name, .-\name
.endm

        GEMM    12, modex_f32_gemm_12x32_avx512
        GEMM    10, modex_f32_gemm_10x32_avx512
        GEMM    8, modex_f32_gemm_8x32_avx512

        .section .note.GNU-stack, "", @progbits
