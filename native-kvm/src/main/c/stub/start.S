/*
 * vmfork-stub's entry and its raw thread clone (see stub.c).
 *
 * _start leaves the stack the kernel built (argv, envp, auxv: none of it is used) at
 * once for one in the stub's own .bss, so that the VMM may have the kernel's [stack]
 * unmapped along with [vdso] and [vvar].
 */
    .text
    .globl _start
    .type _start, @function
_start:
    lea stub_main_stack+65536(%rip), %rsp   /* MAIN_STACK in stub.c */
    xor %ebp, %ebp
    call stub_main
    ud2

/*
 * long stub_clone_thread(unsigned long flags, void *stack_top, void (*fn)(long), long arg)
 * clone(2) with the child on stack_top calling fn(arg); fn never returns. Returns the
 * new thread's id (in the stub's own PID namespace) or -errno, in the caller.
 */
    .globl stub_clone_thread
    .type stub_clone_thread, @function
stub_clone_thread:
    /* the child's fn and arg go on its new stack, where it pops them */
    sub $16, %rsi
    mov %rdx, (%rsi)
    mov %rcx, 8(%rsi)
    mov $56, %eax           /* SYS_clone(flags, stack, ptid, ctid, tls) */
    xor %edx, %edx
    xor %r10d, %r10d
    xor %r8d, %r8d
    syscall
    test %rax, %rax
    jz 1f
    ret
1:  pop %rax                /* child: fn */
    pop %rdi                /* arg */
    xor %ebp, %ebp
    call *%rax
    ud2

    .section .note.GNU-stack,"",@progbits
