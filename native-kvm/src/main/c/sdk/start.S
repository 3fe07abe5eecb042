/*
 * vmfork guest entry point.
 *
 * The VMM enters here at CPL3 in 64-bit mode with RDI = struct vmf_boot_info *
 * and RSP = boot_info->stack_top. There is nothing to return to, so _start keeps
 * main's result and hands it to the exit hypercall.
 */
	.text
	.globl	_start
	.type	_start, @function
_start:
	movq	%rdi, vmf_boot(%rip)
	/*
	 * The ABI promises a 16-byte aligned stack_top; align anyway, since SSE code
	 * that gcc emits faults on a misaligned stack and a fault kills the VM.
	 * The call below pushes the return address, so main sees RSP % 16 == 8 as
	 * the SysV ABI requires.
	 */
	andq	$-16, %rsp
	xorl	%ebp, %ebp		/* terminate frame-pointer chains */
	call	main
	movl	%eax, %edi
	call	vmf_exit		/* noreturn */
1:	ud2
	jmp	1b
	.size	_start, . - _start

/*
 * Where a vCPU started by vmf_vcpu_start begins (VCPU_START's entry): RSP = the
 * 16-byte aligned stack top the SDK chose, RDI = the frame just above it with the
 * function and its argument. Like _start, it is jumped to: the call below gives
 * vmf__vcpu_main the RSP % 16 == 8 the SysV ABI expects. It never returns.
 */
	.globl	vmf__vcpu_entry
	.type	vmf__vcpu_entry, @function
vmf__vcpu_entry:
	xorl	%ebp, %ebp
	call	vmf__vcpu_main		/* noreturn */
1:	ud2
	jmp	1b
	.size	vmf__vcpu_entry, . - vmf__vcpu_entry

/*
 * The vmfork guest note: an ELF note of owner "vmfork", type 1 (VMF_NOTE_GUEST), whose
 * descriptor is the ABI version the guest was built for. The VMM runs an ELF that carries
 * it as an SDK guest, and any other static x86-64 ELF as a Linux program (docs/linux.md).
 */
	.section .note.vmfork, "a", @note
	.balign	4
	.long	7			/* namesz: "vmfork" and its NUL */
	.long	4			/* descsz */
	.long	1			/* type: VMF_NOTE_GUEST (vmfork.h) */
	.asciz	"vmfork"
	.balign	4
	.long	1			/* VMF_ABI_VERSION */

	.section .note.GNU-stack, "", @progbits
