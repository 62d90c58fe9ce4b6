"""The facts of CRI-O's RuntimeDefault seccomp profile, as data.

Source: containers/common ``pkg/seccomp/default_linux.go`` (``DefaultProfile``), as it
stands on container-libs main (``common/pkg/seccomp``, 2025: io_uring and ``syscall`` denied,
futex2/fchmodat2 allowed, bpf/perf_event_open also open to CAP_BPF/CAP_PERFMON, vsock
refused); itself derived from moby's ``profiles/seccomp/default_linux.go``. CRI-O vendors it
and changes one thing (``internal/config/seccomp/seccomp.go``), kept apart in
:data:`CRIO_RULES`. Rules are in upstream order: runtimes add them in that order.

Each :class:`Rule` is one entry of the profile's ``syscalls`` list before resolution:
``includes``/``excludes`` filters on capabilities (of the bounding set) and architectures
(libseccomp's native names: ``amd64``, ``x86``, ``x32``, ``arm64``, ``arm``, ``s390x``...).
"""

from __future__ import annotations

import attrs

__all__ = [
    "AF_ALG",
    "AF_NETLINK",
    "AF_VSOCK",
    "ARCH_MAP",
    "CRIO_REMOVED_FROM_ALLOW",
    "CRIO_RULES",
    "DEFAULT_ACTION",
    "DEFAULT_ERRNO",
    "EINVAL",
    "ENOSYS",
    "EPERM",
    "NETLINK_AUDIT",
    "RULES",
    "Arg",
    "Rule",
]

# errno values (asm-generic/errno-base.h, errno.h); the same on every arch the profile names.
EPERM = 1
EINVAL = 22
ENOSYS = 38
# Socket domains and protocols (linux/socket.h, linux/netlink.h).
AF_NETLINK = 16
AF_ALG = 38
AF_VSOCK = 40
NETLINK_AUDIT = 9

#: containers/common's DefaultAction / DefaultErrnoRet: unknown syscalls fail with ENOSYS
#: (moby uses EPERM here), so programs probing new syscalls fall back cleanly.
DEFAULT_ACTION = "SCMP_ACT_ERRNO"
DEFAULT_ERRNO = ENOSYS

#: ``archMap``: main architecture -> its sub-architectures (SCMP_ARCH_* names), keyed by
#: the libseccomp native arch name that selects it (containers/common ``nativeToSeccomp``).
#: Arches missing here get no ``architectures`` list (libseccomp then uses the native one).
ARCH_MAP: dict[str, tuple[str, ...]] = {
    "amd64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "arm64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "mips64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "mips64n32": ("SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "mipsel64": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "mipsel64n32": ("SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
}


@attrs.frozen
class Arg:
    """One argument comparison (runtime-spec ``LinuxSeccompArg``)."""

    index: int
    value: int
    op: str
    value_two: int = 0


@attrs.frozen
class Rule:
    """One ``syscalls`` entry of the unresolved profile, with its include/exclude filters."""

    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    errno: int | None = None
    args: tuple[Arg, ...] = ()
    include_caps: tuple[str, ...] = ()
    exclude_caps: tuple[str, ...] = ()
    include_arches: tuple[str, ...] = ()
    exclude_arches: tuple[str, ...] = ()


def _n(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _deny(
    names: str, *, errno: int = EPERM, include_caps: tuple[str, ...] = (),
    exclude_caps: tuple[str, ...] = (),
) -> Rule:
    return Rule(_n(names), "SCMP_ACT_ERRNO", errno, (), include_caps, exclude_caps)


def _allow(
    names: str, *, include_caps: tuple[str, ...] = (), include_arches: tuple[str, ...] = (),
) -> Rule:
    return Rule(_n(names), include_caps=include_caps, include_arches=include_arches)


def _cap_pair(cap: str, names: str) -> tuple[Rule, Rule]:
    """Allowed with ``cap``, EPERM without it: the profile's usual capability gate."""
    return (_allow(names, include_caps=(cap,)), _deny(names, exclude_caps=(cap,)))


_ERRNO_EPERM = """
    bdflush cachestat io_pgetevents io_pgetevents_time64 kexec_file_load kexec_load
    map_shadow_stack migrate_pages move_pages nfsservctl nice oldfstat oldlstat oldolduname
    oldstat olduname pciconfig_iobase pciconfig_read pciconfig_write sgetmask ssetmask
    swapoff swapon syscall sysfs uselib userfaultfd ustat vm86 vm86old vmsplice
"""

_ALLOW = """
    _llseek _newselect accept accept4 access adjtimex alarm bind brk capget capset chdir
    chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 clone clone3 close
    close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
    epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
    eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
    fallocate fanotify_init fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32
    fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsconfig
    fsetxattr fsmount fsopen fspick fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
    ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
    futex_wake futimesat get_mempolicy get_robust_list get_thread_area getcpu getcwd
    getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
    getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
    getresgid getresgid32 getresuid getresuid32 getrlimit getrusage getsid getsockname
    getsockopt gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
    inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents io_setup io_submit
    ioctl ioprio_get ioprio_set ipc keyctl kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr
    llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise mbind membarrier
    memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
    mmap mmap2 mount mount_setattr move_mount mprotect mq_getsetattr mq_notify mq_open
    mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink
    mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at
    nanosleep newfstatat open open_tree openat openat2 pause pidfd_getfd pidfd_open
    pidfd_send_signal pipe pipe2 pivot_root pkey_alloc pkey_free pkey_mprotect poll ppoll
    ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease process_vm_readv
    process_vm_writev pselect6 pselect6_time64 ptrace pwrite64 pwritev pwritev2 read
    readahead readlink readlinkat readv reboot recv recvfrom recvmmsg recvmmsg_time64
    recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir
    rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
    rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
    sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
    sched_getparam sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
    select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
    sendmmsg sendmsg sendto set_mempolicy set_robust_list set_thread_area set_tid_address
    setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
    setns setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
    setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid setuid32 setxattr
    shmat shmctl shmdt shmget shutdown sigaltstack signal signalfd signalfd4 sigprocmask
    sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink
    symlinkat sync sync_file_range syncfs sysinfo syslog tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask umount umount2 uname
    unlink unlinkat unshare utime utimensat utimensat_time64 utimes vfork wait4 waitid
    waitpid write writev
"""

# personality(2) personas the profile allows: PER_LINUX, PER_LINUX32, UNAME26,
# UNAME26|PER_LINUX32, and 0xffffffff (the query form, which changes nothing).
_PERSONAS = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
_EQ, _NE = "SCMP_CMP_EQ", "SCMP_CMP_NE"

#: containers/common's ``DefaultProfile().Syscalls``, in order.
RULES: tuple[Rule, ...] = (
    _deny(_ERRNO_EPERM),
    _allow(_ALLOW),
    *(Rule(("personality",), args=(Arg(0, p, _EQ),)) for p in _PERSONAS),
    _allow("sync_file_range2 swapcontext", include_arches=("ppc64le",)),
    _allow("arm_fadvise64_64 arm_sync_file_range breakpoint cacheflush set_tls "
           "sync_file_range2", include_arches=("arm", "arm64")),
    _allow("arch_prctl", include_arches=("amd64", "x32")),
    _allow("modify_ldt", include_arches=("amd64", "x32", "x86")),
    _allow("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
           include_arches=("s390", "s390x")),
    _allow("riscv_flush_icache riscv_hwprobe", include_arches=("riscv64",)),
    *_cap_pair("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    _allow("bpf lookup_dcookie perf_event_open quotactl quotactl_fd setdomainname "
           "sethostname setns", include_caps=("CAP_SYS_ADMIN",)),
    _deny("lookup_dcookie quotactl quotactl_fd setdomainname sethostname setns",
          exclude_caps=("CAP_SYS_ADMIN",)),
    *_cap_pair("CAP_SYS_CHROOT", "chroot"),
    *_cap_pair("CAP_SYS_MODULE", "delete_module finit_module init_module query_module"),
    *_cap_pair("CAP_SYS_PACCT", "acct"),
    *_cap_pair("CAP_SYS_PTRACE", "kcmp process_madvise"),
    *_cap_pair("CAP_SYS_RAWIO", "ioperm iopl"),
    *_cap_pair("CAP_SYS_TIME", "clock_settime clock_settime64 settimeofday stime"),
    *_cap_pair("CAP_SYS_TTY_CONFIG", "vhangup"),
    # socket(2): vsock is refused to everyone; audit netlink sockets only with
    # CAP_AUDIT_WRITE (EINVAL otherwise, as if the protocol did not exist).
    Rule(("socket",), "SCMP_ACT_ERRNO", EPERM, (Arg(0, AF_VSOCK, _EQ),)),
    Rule(("socket",), "SCMP_ACT_ERRNO", EINVAL,
         (Arg(0, AF_NETLINK, _EQ), Arg(2, NETLINK_AUDIT, _EQ)),
         exclude_caps=("CAP_AUDIT_WRITE",)),
    Rule(("socket",), args=(Arg(0, AF_NETLINK, _EQ), Arg(2, NETLINK_AUDIT, _NE)),
         exclude_caps=("CAP_AUDIT_WRITE",)),
    Rule(("socket",), args=(Arg(0, AF_NETLINK, _NE),), exclude_caps=("CAP_AUDIT_WRITE",)),
    Rule(("socket",), args=(Arg(0, AF_VSOCK, _NE),), include_caps=("CAP_AUDIT_WRITE",)),
    # bpf and perf_event_open: allowed by CAP_SYS_ADMIN (above) or their own capability.
    _deny("bpf", exclude_caps=("CAP_SYS_ADMIN", "CAP_BPF")),
    _allow("bpf", include_caps=("CAP_BPF",)),
    _deny("perf_event_open", exclude_caps=("CAP_SYS_ADMIN", "CAP_PERFMON")),
    _allow("perf_event_open", include_caps=("CAP_PERFMON",)),
)

#: CRI-O's change to the library profile (``internal/config/seccomp`` ``DefaultProfile``):
#: ``unshare`` leaves the unconditional allow list and comes back only with CAP_SYS_ADMIN,
#: so an unprivileged container cannot make user namespaces. Without the capability it
#: falls through to the default action (ENOSYS).
CRIO_REMOVED_FROM_ALLOW: frozenset[str] = frozenset({"unshare"})
CRIO_RULES: tuple[Rule, ...] = (_allow("unshare", include_caps=("CAP_SYS_ADMIN",)),)
