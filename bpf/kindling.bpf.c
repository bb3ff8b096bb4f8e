// SPDX-License-Identifier: GPL-2.0
/*
 * Kindling kernel side: socket syscalls, TCP state, retransmits, resets,
 * RTT samples and packet drops, written as variable-length records into one
 * ring buffer. The record layouts live in kindling.h.
 *
 * Only tracepoints are used (the raw sys_enter/sys_exit tracepoints and
 * other tp_btf ones): the target kernels have neither kprobes nor fentry.
 *
 * Syscalls are followed in two halves: the entry handler decides whether
 * the fd is an interesting socket (TCP or UDP over IPv4/IPv6, wanted pid,
 * cgroup and port) and parks the arguments in `pending`; the exit handler
 * knows the return value, reads the payload from user memory and emits.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kindling.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EAGAIN 11
#define EINPROGRESS 115

#define opaque(x) asm volatile("" : "+r"(x))

/* Kernel memory is read in one of two ways, chosen by the loader (the
 * `compat` rodata flag; the verifier removes the other way at load):
 *
 *  - Linux 6.2+: bpf_rdonly_cast() turns a kernel address held as a number
 *    into a typed, read-only pointer whose fields are read with plain
 *    (fault-safe) loads instead of one bpf_probe_read_kernel() call each:
 *    the difference is most of the cost of a record;
 *  - older kernels (5.8+): the kfunc does not exist (libbpf turns its calls
 *    into dead code), a "pointer" is a plain number, and every field is read
 *    with BPF_CORE_READ (bpf_probe_read_kernel at the running kernel's
 *    offsets).
 *
 * KCAST makes the pointer, KGET reads one field (a path of members, not of
 * pointers), KCOPY copies an array member. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#define KCAST(type, addr)                                                          \
	(compat ? (type *)(unsigned long)(addr)                                     \
		: (type *)bpf_rdonly_cast((void *)(unsigned long)(addr),             \
					  bpf_core_type_id_kernel(type)))
/* (the pointer is evaluated first: inside BPF_CORE_READ every member access
 * of the expression would become a relocation against the kernel's BTF) */
#define KGET(ptr, field)                                                           \
	({                                                                         \
		typeof(ptr) __kp = (ptr);                                          \
		compat ? BPF_CORE_READ(__kp, field) : __kp->field;                 \
	})
#define KCOPY(dst, ptr, field)                                                     \
	do {                                                                       \
		typeof(ptr) __kp = (ptr);                                          \
		if (compat)                                                        \
			bpf_core_read(dst, sizeof(__kp->field), &__kp->field);     \
		else                                                               \
			__builtin_memcpy(dst, &__kp->field, sizeof(__kp->field));  \
	} while (0)

/* Every tracepoint program twice: on the BTF-typed tracepoint (tp_btf; needs
 * the kernel's own BTF, and makes its arguments typed, trusted pointers)
 * and on the raw tracepoint (raw_tp; untyped arguments, read with helpers:
 * for kernels without BTF, run with an external BTF file for the CO-RE
 * offsets). The loader loads one of the two; the body is the same, taking
 * the arguments from ctx (the verifier types ctx[i] from the tracepoint's
 * BTF in the first case, whatever the cast). */
#define TWIN_PROGRAMS(tp, name)                                                \
	SEC("tp_btf/" #tp)                                                     \
	int name(unsigned long long *ctx)                                      \
	{                                                                      \
		return name##_body(ctx);                                       \
	}                                                                      \
	SEC("raw_tp/" #tp)                                                     \
	int name##_raw(unsigned long long *ctx)                                \
	{                                                                      \
		return name##_body(ctx);                                       \
	}

/* A field of a tracepoint argument (the saved registers, an skb): a plain
 * load from a tp_btf program's typed argument, a helper read from a raw_tp
 * program's untyped one. */
#define ARG_REG(ptr, field)                                                        \
	({                                                                         \
		typeof(ptr) __ap = (ptr);                                          \
		raw_tracepoints ? BPF_CORE_READ(__ap, field) : __ap->field;        \
	})

/* ---- configuration ------------------------------------------------------ */

/* Set by the loader before load (rodata): the verifier knows the values, so
 * a run without a filter has that filter's branches removed at load. */

/* No bpf_rdonly_cast or task storage for tracing programs (before 6.2):
 * kernel memory is read with helpers and in-flight calls are keyed by
 * thread id (see KCAST, pending_slot). */
const volatile __u8 compat = 0;
/* In-flight calls in a hash by thread id instead of task storage (always
 * with compat; see the loader for when else). */
const volatile __u8 slots_by_tid = 0;
/* The raw_tp twin of every tracepoint program is loaded instead of the
 * tp_btf one (a kernel without BTF, run with an external BTF file; always
 * with compat): see TWIN_PROGRAMS. */
const volatile __u8 raw_tracepoints = 0;
const volatile __u32 self_tgid = 0;
const volatile __u32 snaplen = 4096;
const volatile __u8 filter_pids = 0;
const volatile __u8 filter_cgroups = 0;
const volatile __u8 filter_ports = 0;
/* Programs attached but returning at once: the overhead harness' floor. */
const volatile __u8 hooks_only = 0;
/* Wake the consumer each time a CPU has written this much since its last
 * wake-up (the loader divides the configured total by the number of CPUs);
 * the consumer also polls on a timer. 0 = wake on every record. */
const volatile __u64 wakeup_bytes = 0;
/* How long a thread's comm and cgroup id are reused before being read again. */
const volatile __u64 task_info_ttl_ns = 100000000ULL;
const volatile __u64 rtt_interval_ns = 1000000000ULL;
/* Bytes of each turn of a TCP connection captured in full, past snaplen,
 * so that a large message's framing (chunk-size lines, MySQL packet
 * headers, RESP array elements) is seen; 0 = off. See framing_allow(). */
const volatile __u32 framing_budget = 0;

/* Dummy instances so the skeleton carries the ABI types for layout checks. */
struct ke_data _ke_data = {};
struct ke_conn _ke_conn = {};
struct ke_tcp _ke_tcp = {};
struct ke_drop _ke_drop = {};

/* ---- maps --------------------------------------------------------------- */

/* Everything the programs share with each other and with user space. */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

/* Loss counters, one cache line per CPU, in .bss: user space reads them
 * through the memory-mapped global data instead of one map-lookup syscall
 * per counter (which cost the recorder more than its CRCs). Machines with
 * more CPUs than slots share slots, hence the atomic adds. */
#define LOSS_SLOTS 512
struct loss_slot {
	__u64 n[8]; /* indexed by enum ke_loss */
};
struct loss_slot loss_counts[LOSS_SLOTS] = {};

/* A thread's slot: its cached comm and cgroup, and the connect or close it
 * is in (the only calls with an entry program). Data records assemble the
 * same fields in the CPU's scratch (emit_args.p). */
struct pending {
	/* The thread's comm and cgroup, read again only after task_info_ttl_ns
	 * (the two helpers cost about 100 ns per record) or after an exec or a
	 * rename (on_exec, on_rename). A thread moved to another cgroup shows
	 * the old one for at most task_info_ttl_ns. */
	char comm[KINDLING_COMM_LEN];
	__u64 cgroup_id;
	__u64 info_ts;
	struct ke_sock sk; /* close: the socket, described at entry */
	__u64 ts;
	__u64 sock;	   /* struct sock * */
	__u64 ino;
	__u64 buf;	   /* buffer, iovec array, msghdr or mmsghdr array */
	__u64 addr;	   /* user sockaddr (sendto, recvfrom, connect, accept) */
	__u32 count;	   /* buffer length, iovcnt or vlen */
	__s32 fd;
	__u8 syscall;	   /* enum ke_syscall; 0 = idle */
	__u8 exit;	   /* enum sys_exit_kind, from the syscall table */
	__u8 dir;	   /* KD_* of EXIT_MOVED: which end the socket is */
	__u8 _pad[5];
};

/* One slot per thread: a thread is in at most one syscall at a time. Task
 * storage is a pointer chase, not a hash lookup. `syscall == 0` = idle. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} pending SEC(".maps");

/* The same slots where task storage cannot be used by tracing programs
 * (compat): a hash by thread id. LRU, since a thread that exits mid-call
 * leaves its slot behind. The loader creates one of the two maps. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct pending);
} pending_tid SEC(".maps");

/* What a new slot starts as. */
static const struct pending idle_slot = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

/* One byte per port: array lookups are inlined by the verifier, hash
 * lookups are helper calls, and this one runs twice per syscall. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} port_filter SEC(".maps");

/* Sockets touched by wanted processes; TCP events of other sockets are
 * dropped when a pid or cgroup filter is set (they fire in softirq, where
 * the current pid means nothing). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} wanted_socks SEC(".maps");

/* Last RTT sample per socket, for rate limiting: a direct-mapped table
 * indexed by a hash of the socket address (an array lookup instead of an LRU
 * hash lookup on every data record). A slot names its socket; a collision
 * just restarts the other socket's interval. */
#define RTT_SLOTS 16384
struct rtt_slot {
	__u64 sock;
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RTT_SLOTS);
	__type(key, __u32);
	__type(value, struct rtt_slot);
} rtt_last SEC(".maps");

/* The framing budget of a TCP socket, per direction (KD_*): how much of
 * the current turn may still be captured in full, and where the other
 * direction's stream stood when the turn began. A turn ends when the other
 * direction moves (the application sent or read something in between): a
 * new request, the next command. Looked up only for syscalls longer than
 * snaplen. LRU: a socket that is gone ages out. */
struct framing {
	__u32 other_seq[2];
	__u32 left[2];
	__u8 started[2];
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct framing);
} framing_map SEC(".maps");

/* What a socket's framing entry starts as (not on the stack: sys_exit's
 * frame is at the 512-byte limit). */
static const struct framing fresh_framing = {};

/* Per-CPU scratch where a data record is assembled before ringbuf_output.
 * Payload room is twice the max snaplen so that "offset < MAX, len <= MAX"
 * is provably in bounds for the verifier. That is over the 32 KiB per-CPU
 * value limit, so it is a plain array indexed by CPU; the loader sizes it
 * to the number of possible CPUs. */
/* Everything one data record needs. It lives in the CPU's scratch slot,
 * not on the stack: the global emit_message() and emit_data() (verified
 * once each, not per call site) take no pointer arguments, which kernels
 * before 5.12 refuse for global functions, and sys_exit's stack stays
 * under the 512-byte limit across the three frames. */
struct emit_args {
	struct pending p;
	__s64 ret;
	__u64 now;
	__u64 data;	 /* user buffer, or iovec array when iovcnt > 0 */
	__u64 iovcnt;
	__u64 total;	 /* true length of this message */
	__u64 peer;	 /* optional user sockaddr of the other end */
	__u64 limit;	 /* bytes to capture: snaplen, or more under the framing budget */
	__u32 msg_index;
	__u32 direction;
	__s32 fd_in;	 /* the source fd of sendfile, splice, copy_file_range */
	__u16 more;	 /* KF_CONTINUED when another part of this syscall follows */
	__u16 _pad;
};

struct scratch {
	struct ke_data d;
	__u8 payload[2 * KINDLING_MAX_SNAPLEN]; /* right after d: written out with it */
	struct emit_args args;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* This CPU's scratch slot. */
static __always_inline struct scratch *scratch_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&scratch_map, &cpu);
}

/* Bytes each CPU wrote since it last woke the consumer. Per CPU so that the
 * check touches no cache line the other CPUs write (asking the ring how
 * much waits reads both of its shared positions), and so that a wake-up is
 * sent once per batch instead of on every record while the consumer drains. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unwoken SEC(".maps");

/* ---- filters ------------------------------------------------------------ */

/* Who is followed: the loader's pid, cgroup and port filters, and the
 * sockets those processes touched (for events that fire outside them). */

static __always_inline bool filters_on(void)
{
	return filter_pids || filter_cgroups;
}

static __always_inline bool task_wanted(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&pid_filter, &tgid))
		return false;
	if (filter_cgroups) {
		__u64 cg = bpf_get_current_cgroup_id();
		if (!bpf_map_lookup_elem(&cgroup_filter, &cg))
			return false;
	}
	return true;
}

static __always_inline bool port_set(__u32 port)
{
	__u8 *v = bpf_map_lookup_elem(&port_filter, &port);
	return v && *v;
}

static __always_inline bool ports_wanted(__u16 a, __u16 b)
{
	if (!filter_ports)
		return true;
	return port_set(a) || port_set(b);
}

static __always_inline void remember_sock(__u64 sock)
{
	__u8 one = 1;

	if (filters_on() && !bpf_map_lookup_elem(&wanted_socks, &sock))
		bpf_map_update_elem(&wanted_socks, &sock, &one, BPF_ANY);
}

static __always_inline bool sock_wanted(__u64 sock)
{
	return !filters_on() || bpf_map_lookup_elem(&wanted_socks, &sock);
}

/* ---- socket identity ---------------------------------------------------- */

/* From an fd to a TCP/UDP socket, and from a socket or a sockaddr to the
 * ke_sock every record carries. */

/* Kernel address of the struct file behind fd, 0 if none. */
static __always_inline __u64 fd_to_file(int fd)
{
	struct task_struct *task;
	struct files_struct *files;
	struct fdtable *fdt;
	__u64 fds, f = 0;

	if (compat)
		task = (struct task_struct *)bpf_get_current_task();
	else
		task = bpf_get_current_task_btf();
	files = KGET(task, files);
	fdt = KGET(files, fdt);
	if (fd < 0 || (unsigned int)fd >= KGET(fdt, max_fds))
		return 0;
	fds = (__u64)KGET(fdt, fd);
	/* The slot is read as the first pointer of a one-pointer kernel struct:
	 * a plain load, not a bpf_probe_read_kernel() call. */
	f = (__u64)KGET(KCAST(struct llist_node, fds + (__u64)fd * sizeof(void *)), next);
	return f;
}

/* The struct sock behind a file if it is a TCP or UDP socket over IPv4/IPv6. */
static __always_inline struct sock *file_to_sock(__u64 file, __u64 *ino)
{
	struct file *f;
	struct inode *inode;
	struct socket *sock;
	struct sock *sk;
	__u16 family, proto;

	if (!file)
		return NULL;
	f = KCAST(struct file, file);
	inode = KGET(f, f_inode);
	if (!inode || (KGET(inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = KCAST(struct socket, KGET(f, private_data));
	sk = KGET(sock, sk);
	if (!sk)
		return NULL;
	family = KGET(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	proto = KGET(sk, sk_protocol);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return NULL;
	*ino = KGET(inode, i_ino);
	return sk;
}

static __always_inline void fill_sock(struct ke_sock *out, const struct sock *sk)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->sock = (__u64)sk;
	out->family = KGET(sk, __sk_common.skc_family);
	out->protocol = KGET(sk, sk_protocol);
	out->state = KGET(sk, __sk_common.skc_state);
	out->sport = KGET(sk, __sk_common.skc_num);
	out->dport = bpf_ntohs(KGET(sk, __sk_common.skc_dport));
	out->netns = KGET(KGET(sk, __sk_common.skc_net.net), ns.inum);
	if (out->family == AF_INET) {
		*(__u32 *)out->saddr = KGET(sk, __sk_common.skc_rcv_saddr);
		*(__u32 *)out->daddr = KGET(sk, __sk_common.skc_daddr);
	} else {
		KCOPY(out->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		KCOPY(out->daddr, sk, __sk_common.skc_v6_daddr);
	}
}

/* Peer address from a user sockaddr (unconnected UDP, failed connect). */
static __always_inline bool peer_from_user(struct ke_sock *out, __u64 uaddr)
{
	__u16 family = 0;

	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), (void *)uaddr))
		return false;
	if (family == AF_INET) {
		struct sockaddr_in sin = {};
		if (bpf_probe_read_user(&sin, sizeof(sin), (void *)uaddr))
			return false;
		__builtin_memset(out->daddr, 0, sizeof(out->daddr));
		__builtin_memcpy(out->daddr, &sin.sin_addr.s_addr, 4);
		out->dport = bpf_ntohs(sin.sin_port);
		return true;
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		if (bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uaddr))
			return false;
		__builtin_memcpy(out->daddr, sin6.sin6_addr.in6_u.u6_addr8, 16);
		out->dport = bpf_ntohs(sin6.sin6_port);
		return true;
	}
	return false;
}

/* ---- records ------------------------------------------------------------ */

/* Every record reaches the ring through here: reserved (fixed-size records)
 * or copied (data records, assembled in scratch), lost-counted when the ring
 * is full, and submitted under one wake-up policy. Then the header fields
 * every record fills the same way. */

static __always_inline void count_loss(__u32 which)
{
	__u32 cpu = bpf_get_smp_processor_id() & (LOSS_SLOTS - 1);

	__sync_fetch_and_add(&loss_counts[cpu].n[which & 7], 1);
}

/* Wake-up flag for a record of `size` bytes about to be submitted. */
static __always_inline __u64 wake_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&unwoken, &zero);

	if (!n)
		return BPF_RB_FORCE_WAKEUP;
	*n += size;
	if (*n < wakeup_bytes)
		return BPF_RB_NO_WAKEUP;
	*n = 0;
	return BPF_RB_FORCE_WAKEUP;
}

/* Room for a fixed-size record, filled in place; NULL (and a loss) when the
 * ring is full. */
static __always_inline void *record_reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		count_loss(KL_RING_FULL);
	return e;
}

/* Hand a reserved record to the consumer, or, when a filter that needed the
 * filled record rejects it (`keep` false), give the room back unseen. */
static __always_inline void record_commit(void *e, __u64 size, bool keep)
{
	if (keep)
		bpf_ringbuf_submit(e, wake_flags(size));
	else
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
}

/* Copy a record assembled elsewhere (a data record, in scratch) into the
 * ring; a full ring is a loss. */
static __always_inline void record_output(void *rec, __u64 size)
{
	if (bpf_ringbuf_output(&events, rec, size, wake_flags(size)))
		count_loss(KL_RING_FULL);
}

/* Header fields every record fills the same way. */
static __always_inline void fill_header_ids(struct ke_header *h, __u16 kind, __u32 size, __u64 ts)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->kind = kind;
	h->flags = 0;
	h->size = size;
	h->ts_ns = ts;
	h->pid = id >> 32;
	h->tid = (__u32)id;
}

static __always_inline void fill_header(struct ke_header *h, __u16 kind, __u32 size, __u64 ts)
{
	fill_header_ids(h, kind, size, ts);
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Header of a syscall record: comm and cgroup from the thread's cache. */
static __always_inline void fill_header_cached(struct ke_header *h, __u16 kind, __u32 size,
					       __u64 ts, const struct pending *p)
{
	fill_header_ids(h, kind, size, ts);
	h->cgroup_id = p->cgroup_id;
	__builtin_memcpy(h->comm, p->comm, sizeof(h->comm));
}

/* ---- in-flight calls ---------------------------------------------------- */

/* This thread's slot for the call it is in: task storage (a pointer chase),
 * or in compat a hash by thread id. `create`: make it if missing. */
static __always_inline struct pending *pending_slot(bool create)
{
	__u32 tid;
	struct pending *p;

	if (!slots_by_tid)
		return bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0,
					    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	tid = (__u32)bpf_get_current_pid_tgid();
	p = bpf_map_lookup_elem(&pending_tid, &tid);
	if (!p && create) {
		bpf_map_update_elem(&pending_tid, &tid, &idle_slot, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&pending_tid, &tid);
	}
	return p;
}

/* ---- syscall table ------------------------------------------------------ */

/*
 * One program on the raw sys_exit tracepoint, dispatching on the syscall
 * number: per-syscall exit tracepoints would run the perf tracing plumbing
 * (buffer setup, argument copy) before every followed call. What is done
 * with each number is in one table, sys_desc(). The only entries needed,
 * connect's and close's, are rare: there the per-syscall tracepoints are
 * the cheap way, since no program then runs on any other call's entry.
 */
#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_accept4 288
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_sendfile 40
#define NR_splice 275
#define NR_copy_file_range 326
#define SYSCALL_NR(regs) ARG_REG(regs, orig_ax)
#define ARG0(regs) ARG_REG(regs, di)
#define ARG1(regs) ARG_REG(regs, si)
#define ARG2(regs) ARG_REG(regs, dx)
#define ARG4(regs) ARG_REG(regs, r8)
/* 32-bit tasks number their syscalls differently: only follow 64-bit ones. */
#define NATIVE_SYSCALL(regs) ((ARG_REG(regs, cs) & 0xffff) == 0x33)
#elif defined(__TARGET_ARCH_arm64)
#define NR_read 63
#define NR_write 64
#define NR_close 57
#define NR_readv 65
#define NR_writev 66
#define NR_connect 203
#define NR_accept 202
#define NR_sendto 206
#define NR_recvfrom 207
#define NR_sendmsg 211
#define NR_recvmsg 212
#define NR_accept4 242
#define NR_recvmmsg 243
#define NR_sendmmsg 269
#define NR_sendfile 71
#define NR_splice 76
#define NR_copy_file_range 285
/* vmlinux.h is generated from an x86 kernel: arm64's saved registers are
 * declared here and relocated by name against the running kernel (CO-RE
 * finds `regs` inside pt_regs' anonymous union). */
struct pt_regs___kindling_arm64 {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#define ARM64_REGS(regs) ((struct pt_regs___kindling_arm64 *)(regs))
#define SYSCALL_NR(regs) ARG_REG(ARM64_REGS(regs), syscallno)
/* At exit x0 holds the return value; the first argument survives in
 * orig_x0. */
#define ARG0(regs) ARG_REG(ARM64_REGS(regs), orig_x0)
#define ARG1(regs) ARG_REG(ARM64_REGS(regs), regs[1])
#define ARG2(regs) ARG_REG(ARM64_REGS(regs), regs[2])
#define ARG4(regs) ARG_REG(ARM64_REGS(regs), regs[4])
#define NATIVE_SYSCALL(regs) (!(ARG_REG(ARM64_REGS(regs), pstate) & 0x10)) /* PSR_MODE32_BIT */
#else
#error "unsupported architecture: define the syscall numbers"
#endif

/* Where the entry finds what it parks. The socket's fd is the first
 * argument, except for the calls that move bytes between two fds, where
 * either end may be the socket. */
enum sys_args {
	ARGS_FD,	/* (fd): close */
	ARGS_BUF,	/* (fd, buf, count): read, write, readv, writev, *mmsg */
	ARGS_BUF_ADDR,	/* (fd, buf, len, flags, addr): sendto, recvfrom */
	ARGS_MSG,	/* (fd, msghdr): sendmsg, recvmsg; one message */
	ARGS_ADDR,	/* (fd, sockaddr): connect, accept, accept4 */
	ARGS_OUT_IN,	/* (out_fd, in_fd, ...): sendfile */
	ARGS_IN_OUT,	/* (fd_in, off_in, fd_out, ...): splice, copy_file_range */
};

/* How the exit reports it. */
enum sys_exit_kind {
	EXIT_NONE,	/* not followed */
	EXIT_BUF,	/* data: one flat buffer, peer maybe in the call's address */
	EXIT_IOV,	/* data: an iovec array */
	EXIT_MSG,	/* data: a msghdr */
	EXIT_MMSG,	/* data: an mmsghdr array, one record per message */
	EXIT_CONNECT,	/* KE_CONNECT; ports known only at exit */
	EXIT_ACCEPT,	/* KE_ACCEPT of the new socket; ports known only at exit */
	EXIT_CLOSE,	/* KE_CLOSE; socket described at entry, while it exists */
	EXIT_MOVED,	/* data moved in the kernel: length and timing, no payload */
};

struct sys_desc {
	__u8 ks;	/* enum ke_syscall; 0 = not followed */
	__u8 args;	/* enum sys_args */
	__u8 exit;	/* enum sys_exit_kind */
	__u8 dir;	/* KD_* of a data syscall (EXIT_MOVED: if the destination
			 * is the socket; the entry decides) */
};

#define SYS(ks_, args_, exit_, dir_) \
	((struct sys_desc){ .ks = (ks_), .args = (args_), .exit = (exit_), .dir = (dir_) })

/* Every followed syscall, by number. A switch the compiler turns into a few
 * compares: no map lookup, nothing for the verifier to bound.
 *
 * sendfile, splice and copy_file_range move bytes between a socket and a
 * file or pipe without a user buffer (nginx sends bodies with sendfile,
 * proxies forward with splice): they are reported by length and timing
 * only. copy_file_range wants regular files at both ends and fails with
 * EINVAL on a socket (since 5.3); followed anyway, so a kernel that ever
 * allows it is not missed. Not followed: vmsplice (user memory into or out
 * of a pipe: its fd is always a pipe) and tee (pipe to pipe): neither
 * touches a socket; the splice that takes their pipe to a socket is seen. */
static __always_inline struct sys_desc sys_desc(long nr)
{
	switch (nr) {
	case NR_read:     return SYS(KS_READ,     ARGS_BUF,      EXIT_BUF,     KD_INGRESS);
	case NR_write:    return SYS(KS_WRITE,    ARGS_BUF,      EXIT_BUF,     KD_EGRESS);
	case NR_readv:    return SYS(KS_READV,    ARGS_BUF,      EXIT_IOV,     KD_INGRESS);
	case NR_writev:   return SYS(KS_WRITEV,   ARGS_BUF,      EXIT_IOV,     KD_EGRESS);
	case NR_sendto:   return SYS(KS_SENDTO,   ARGS_BUF_ADDR, EXIT_BUF,     KD_EGRESS);
	case NR_recvfrom: return SYS(KS_RECVFROM, ARGS_BUF_ADDR, EXIT_BUF,     KD_INGRESS);
	case NR_sendmsg:  return SYS(KS_SENDMSG,  ARGS_MSG,      EXIT_MSG,     KD_EGRESS);
	case NR_recvmsg:  return SYS(KS_RECVMSG,  ARGS_MSG,      EXIT_MSG,     KD_INGRESS);
	case NR_sendmmsg: return SYS(KS_SENDMMSG, ARGS_BUF,      EXIT_MMSG,    KD_EGRESS);
	case NR_recvmmsg: return SYS(KS_RECVMMSG, ARGS_BUF,      EXIT_MMSG,    KD_INGRESS);
	case NR_connect:  return SYS(KS_CONNECT,  ARGS_ADDR,     EXIT_CONNECT, 0);
	case NR_accept:   return SYS(KS_ACCEPT,   ARGS_ADDR,     EXIT_ACCEPT,  0);
	case NR_accept4:  return SYS(KS_ACCEPT4,  ARGS_ADDR,     EXIT_ACCEPT,  0);
	case NR_close:    return SYS(KS_CLOSE,    ARGS_FD,       EXIT_CLOSE,   0);
	case NR_sendfile: return SYS(KS_SENDFILE, ARGS_OUT_IN,   EXIT_MOVED,   KD_EGRESS);
	case NR_splice:   return SYS(KS_SPLICE,   ARGS_IN_OUT,   EXIT_MOVED,   KD_EGRESS);
	case NR_copy_file_range:
		return SYS(KS_COPY_FILE_RANGE, ARGS_IN_OUT, EXIT_MOVED, KD_EGRESS);
	}
	return SYS(0, ARGS_FD, EXIT_NONE, 0);
}

/* ---- syscall entry ------------------------------------------------------ */

/* Most followed syscalls are seen at their exit alone (see sys_exit). Two
 * need their entry: close, whose fd is gone by its exit (the socket is
 * described while it exists), and connect, whose duration is the time to
 * connect (and a refused connect resets its socket inside the call, so the
 * socket is remembered before it). Everything else returns after the
 * syscall-number switch. */

static __always_inline int enter_sock_call(struct sys_desc d, int fd, __u64 addr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p;
	struct sock *sk;
	__u64 ino = 0;

	if (!task_wanted(id >> 32))
		return 0;
	sk = file_to_sock(fd_to_file(fd), &ino);
	if (!sk)
		return 0;
	/* connect learns its ports at exit; filter there */
	if (filter_ports && d.exit == EXIT_CLOSE) {
		__u16 sport = KGET(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(KGET(sk, __sk_common.skc_dport));
		bool unconnected_udp = dport == 0 && KGET(sk, sk_protocol) == IPPROTO_UDP;
		if (!unconnected_udp && !ports_wanted(sport, dport))
			return 0;
	}
	p = pending_slot(true);
	if (!p) {
		count_loss(KL_PENDING_FULL);
		return 0;
	}
	remember_sock((__u64)sk);
	if (d.exit == EXIT_CLOSE)
		fill_sock(&p->sk, sk);
	p->ts = bpf_ktime_get_boot_ns();
	if (p->ts - p->info_ts >= task_info_ttl_ns) {
		p->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(p->comm, sizeof(p->comm));
		p->info_ts = p->ts;
	}
	p->sock = (__u64)sk;
	p->ino = ino;
	p->addr = addr;
	p->fd = fd;
	p->syscall = d.ks;
	p->exit = d.exit;
	return 0;
}

/* Attached to these two syscalls' own tracepoints, not to the raw
 * sys_enter of every syscall of the host: no program runs on the entry of
 * any other call (32-bit calls do not reach these events). */
SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	if (hooks_only)
		return 0;
	return enter_sock_call(SYS(KS_CONNECT, ARGS_ADDR, EXIT_CONNECT, 0), ctx->args[0],
			       ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	if (hooks_only)
		return 0;
	return enter_sock_call(SYS(KS_CLOSE, ARGS_FD, EXIT_CLOSE, 0), ctx->args[0], 0);
}

/* ---- payload capture ---------------------------------------------------- */

/* Copying user buffers into a data record: flat buffers, iovec arrays, and
 * the global emit_data() that builds and writes the record. */

/* Copy up to `n` bytes of user memory to payload[off..]. Returns bytes copied. */
static __always_inline __u64 copy_user(struct scratch *s, __u64 off, __u64 src, __u64 n,
				       __u16 *flags)
{
	if (off >= KINDLING_MAX_SNAPLEN)
		return 0;
	/* The compiler may test a copy of a register and use another; hide the
	 * values from it so the verifier sees the bounds on what is used. */
	opaque(off);
	off &= KINDLING_MAX_SNAPLEN - 1;
	opaque(n);
	if (n > KINDLING_MAX_SNAPLEN)
		n = KINDLING_MAX_SNAPLEN;
	opaque(n);
	if (n == 0)
		return 0;
	if (bpf_probe_read_user(&s->payload[off], n, (void *)src)) {
		*flags |= KF_READ_FAILED;
		return 0;
	}
	return n;
}

/* Capture `total` bytes spread over an iovec array, up to snaplen (a
 * limit the verifier knows: its loop would not verify with a variable one,
 * so the framing budget does not reach iovecs). The
 * iovecs are read IOV_BATCH at a time: one user-memory read costs about as
 * much as copying a small payload. */
#define IOV_BATCH 4
static __always_inline __u64 capture_iov(struct scratch *s, __u64 iov_ptr, __u64 iovcnt,
					 __u64 total, __u16 *flags)
{
	struct iovec iovs[IOV_BATCH] = {};
	__u64 cap = 0;
	__u64 left = total;

	for (int i = 0; i < KINDLING_MAX_IOV; i++) {
		struct iovec *iov = &iovs[i & (IOV_BATCH - 1)];
		__u64 want;

		if (i >= iovcnt || left == 0 || cap >= snaplen)
			break;
		if ((i & (IOV_BATCH - 1)) == 0) {
			__u64 n = iovcnt - i;

			if (n > IOV_BATCH)
				n = IOV_BATCH;
			if (bpf_probe_read_user(iovs, n * sizeof(struct iovec),
						(void *)(iov_ptr + i * sizeof(struct iovec)))) {
				*flags |= KF_READ_FAILED;
				break;
			}
		}
		want = iov->iov_len < left ? iov->iov_len : left;
		left -= want;
		if (want > snaplen - cap)
			want = snaplen - cap;
		cap += copy_user(s, cap, (__u64)iov->iov_base, want, flags);
	}
	return cap;
}


/* Emit one data record, payload captured up to a->limit (flat buffers) or
 * snaplen (iovecs). */
__noinline int emit_data(void)
{
	struct scratch *s = scratch_get();
	struct emit_args *a;
	struct ke_data *d;
	__u16 flags = 0;
	__u64 cap, size;

	if (!s)
		return 0;
	a = &s->args;
	d = &s->d;
	if (a->iovcnt == 0)
		cap = copy_user(s, 0, a->data, a->total < a->limit ? a->total : a->limit, &flags);
	else
		cap = capture_iov(s, a->data, a->iovcnt, a->total, &flags);
	opaque(cap);
	if (cap > KINDLING_MAX_SNAPLEN)
		cap = KINDLING_MAX_SNAPLEN;
	if (cap < a->total) {
		flags |= KF_TRUNCATED;
		count_loss(KL_TRUNCATED);
	}
	if (flags & KF_READ_FAILED)
		count_loss(KL_READ_FAILED);

	size = sizeof(struct ke_data) + cap;
	fill_header_cached(&d->hdr, KE_DATA, size, a->now, &a->p);
	fill_sock(&d->sk, KCAST(struct sock, a->p.sock));
	/* Connected sockets passed the port filter at entry; unconnected UDP
	 * is checked here, once the peer is known. */
	if (a->peer && d->sk.dport == 0 && peer_from_user(&d->sk, a->peer))
		flags |= KF_PEER_FROM_ADDR;
	if ((d->sk.dport == 0 || (flags & KF_PEER_FROM_ADDR)) &&
	    !ports_wanted(d->sk.sport, d->sk.dport))
		return 0;
	d->hdr.flags = flags | a->more;
	d->ts_enter_ns = a->p.ts;
	d->ret = a->ret;
	d->ino = a->p.ino;
	d->len = a->total;
	d->cap_len = cap;
	d->fd = a->p.fd;
	d->syscall = a->p.syscall;
	d->direction = a->direction;
	d->msg_index = a->msg_index;
	opaque(size);
	if (size > sizeof(struct ke_data) + KINDLING_MAX_SNAPLEN)
		size = sizeof(struct ke_data) + KINDLING_MAX_SNAPLEN;
	record_output(s, size);
	return 0;
}

/* How many bytes of a TCP syscall of `total` bytes (longer than snaplen)
 * to capture in full under the framing budget of its socket's turn, and
 * take them from the budget. */
static __always_inline __u64 framing_allow(__u64 sock, __u32 dir, __u64 total)
{
	struct tcp_sock *tp = KCAST(struct tcp_sock, sock);
	struct framing *f;
	__u32 other;
	__u64 allow;

	/* receiving: the turn is over once the application sent again;
	 * sending: once it read again */
	other = dir == KD_INGRESS ? KGET(tp, write_seq) : KGET(tp, copied_seq);
	dir &= 1;
	f = bpf_map_lookup_elem(&framing_map, &sock);
	if (!f) {
		bpf_map_update_elem(&framing_map, &sock, &fresh_framing, BPF_NOEXIST);
		f = bpf_map_lookup_elem(&framing_map, &sock);
		if (!f)
			return 0;
	}
	if (!f->started[dir] || f->other_seq[dir] != other) {
		f->started[dir] = 1;
		f->other_seq[dir] = other;
		f->left[dir] = framing_budget;
	}
	allow = total < f->left[dir] ? total : f->left[dir];
	f->left[dir] -= allow;
	return allow;
}

/* Emit a flat-buffer syscall's payload: one record captured up to snaplen,
 * or, while its TCP socket's framing budget lasts, the whole payload in
 * parts of KINDLING_MAX_SNAPLEN (the last part carries what is left
 * uncaptured, flagged truncated). Iovec syscalls keep snaplen. */
__noinline int emit_message(void)
{
	struct scratch *s = scratch_get();
	struct emit_args *a;
	__u64 total, base, full;

	if (!s)
		return 0;
	a = &s->args;
	total = a->total;
	base = a->data;
	a->limit = snaplen;
	a->more = 0;
	if (!framing_budget || total <= snaplen || a->iovcnt ||
	    KGET(KCAST(struct sock, a->p.sock), sk_protocol) != IPPROTO_TCP) {
		emit_data();
		return 0;
	}
	full = framing_allow(a->p.sock, a->direction, total);
	if (full <= snaplen) {
		emit_data();
		return 0;
	}
	/* Each part's offset is a constant of its iteration (not a sum of
	 * earlier lengths), so the verifier walks the loop in few states. */
	for (int i = 0; i < KINDLING_MAX_PARTS; i++) {
		__u64 off = (__u64)i * KINDLING_MAX_SNAPLEN;
		__u64 part = total - off, end;
		bool last;

		if (part > KINDLING_MAX_SNAPLEN)
			part = KINDLING_MAX_SNAPLEN;
		end = off + part;
		/* the part that reaches the end, the budget, or the part limit */
		last = end >= total || end >= full || i == KINDLING_MAX_PARTS - 1;
		a->data = base + off;
		a->total = part;
		a->limit = part;
		a->more = end < total ? KF_CONTINUED : 0;
		emit_data();
		if (last) {
			/* the rest, uncaptured, in one record */
			if (end < total) {
				a->data = base + end;
				a->total = total - end;
				a->limit = 0;
				a->more = 0;
				emit_data();
			}
			return 0;
		}
	}
	return 0;
}

/* ---- syscall exit ------------------------------------------------------- */

/* The second half: take what the entry parked, learn the return value, and
 * emit data or connection records (plus a rate-limited RTT sample). */

/* `addr` is sk as a number (the verifier allows no arithmetic on sk). */
static __always_inline void emit_rtt(const struct sock *sk, __u64 addr, __u64 now,
				     const struct pending *p)
{
	/* struct sock is cache-line aligned: drop the low bits before mixing. */
	__u32 slot = (__u32)((addr >> 6) ^ (addr >> 20)) & (RTT_SLOTS - 1);
	struct rtt_slot *last = bpf_map_lookup_elem(&rtt_last, &slot);
	struct tcp_sock *tp = KCAST(struct tcp_sock, sk);
	struct ke_tcp *e;

	if (!last || (last->sock == addr && now - last->ts < rtt_interval_ns))
		return;
	last->sock = addr;
	last->ts = now;
	e = record_reserve(sizeof(*e));
	if (!e)
		return;
	fill_header_cached(&e->hdr, KE_TCP_RTT, sizeof(*e), now, p);
	fill_sock(&e->sk, sk);
	e->srtt_us = KGET(tp, srtt_us) >> 3;
	e->rttvar_us = KGET(tp, mdev_us) >> 2;
	e->total_retrans = KGET(tp, total_retrans);
	e->snd_cwnd = KGET(tp, snd_cwnd);
	e->old_state = 0;
	e->new_state = e->sk.state;
	e->reset_dir = 0;
	record_commit(e, sizeof(*e), true);
}

static __always_inline bool take_pending(struct pending *out)
{
	struct pending *p;

	p = pending_slot(false);
	if (!p || !p->syscall)
		return false;
	__builtin_memcpy(out, p, sizeof(*out));
	p->syscall = 0;
	return true;
}

/* The thread's comm and cgroup id for a record, from its cache (refreshed
 * after task_info_ttl_ns, an exec or a rename), or read afresh where the
 * cache cannot be had. */
static __always_inline void task_info(struct pending *out, __u64 now)
{
	struct pending *slot = pending_slot(true);

	if (slot && now - slot->info_ts < task_info_ttl_ns) {
		out->cgroup_id = slot->cgroup_id;
		__builtin_memcpy(out->comm, slot->comm, sizeof(out->comm));
		return;
	}
	out->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(out->comm, sizeof(out->comm));
	if (slot) {
		slot->cgroup_id = out->cgroup_id;
		__builtin_memcpy(slot->comm, out->comm, sizeof(slot->comm));
		slot->info_ts = now;
	}
}

/*
 * Exit-only capture. At a syscall's exit the task's saved user registers
 * still hold its arguments (only the return value register changed), so
 * the data syscalls and accept are seen at their exit alone: no entry
 * program, no in-flight slot, one timestamp — the exit's, when the bytes
 * were sent or had arrived. sys_exit parks the arguments in the CPU's
 * scratch (a->p); this finds the socket behind the fd and applies the
 * filters. Global, so verified once: 1 when the call is to be reported.
 */
__noinline int exit_locate(void)
{
	struct scratch *s = scratch_get();
	struct emit_args *a;
	struct sock *sk;
	__u64 ino = 0;

	if (!s)
		return 0;
	a = &s->args;
	if (!task_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	sk = file_to_sock(fd_to_file(a->p.fd), &ino);
	if (!sk && a->p.exit == EXIT_MOVED) {
		/* The destination is no socket: maybe the source is (a splice
		 * out of a socket into a pipe: bytes received). */
		a->p.fd = a->fd_in;
		a->p.dir = KD_INGRESS;
		sk = file_to_sock(fd_to_file(a->p.fd), &ino);
	}
	if (!sk)
		return 0;
	/* accept learns its ports from the new socket (exit_conn filters);
	 * unconnected UDP names its peer per call (emit_data filters). */
	if (filter_ports && a->p.exit != EXIT_ACCEPT) {
		__u16 sport = KGET(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(KGET(sk, __sk_common.skc_dport));
		bool unconnected_udp = dport == 0 && KGET(sk, sk_protocol) == IPPROTO_UDP;
		if (!unconnected_udp && !ports_wanted(sport, dport))
			return 0;
	}
	a->now = bpf_ktime_get_boot_ns();
	a->p.ts = a->now;
	a->p.sock = (__u64)sk;
	a->p.ino = ino;
	task_info(&a->p, a->now);
	remember_sock((__u64)sk);
	return 1;
}

/* Common start of every data syscall exit, once exit_locate() said yes. */
static __always_inline void begin_data(struct emit_args *a, long ret, __u32 direction)
{
	a->ret = ret;
	a->total = ret > 0 ? ret : 0;
	a->direction = direction;
	a->msg_index = 0;
	a->peer = 0;
	a->iovcnt = 0;
	a->data = a->p.buf;
	a->limit = snaplen;
	a->more = 0;
}

static __always_inline int end_data(struct emit_args *a)
{
	struct sock *sk = KCAST(struct sock, a->p.sock);

	if (KGET(sk, sk_protocol) == IPPROTO_TCP)
		emit_rtt(sk, a->p.sock, a->now, &a->p);
	return 0;
}

/* read, write, sendto, recvfrom (one flat buffer, peer maybe in the call's
 * address) and readv, writev (an iovec array). */
static __always_inline int exit_plain(struct emit_args *a, long ret, __u32 direction,
				      bool vectored)
{
	begin_data(a, ret, direction);
	if (vectored)
		a->iovcnt = a->p.count;
	else
		a->peer = a->p.addr;
	emit_message();
	return end_data(a);
}

/* sendmsg, recvmsg: a msghdr with iovecs and maybe a peer address. */
static __always_inline int exit_msg(struct emit_args *a, long ret, __u32 direction)
{
	struct user_msghdr msg = {};

	begin_data(a, ret, direction);
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)a->p.buf))
		count_loss(KL_READ_FAILED);
	a->data = (__u64)msg.msg_iov;
	a->iovcnt = msg.msg_iovlen ? msg.msg_iovlen : 1;
	if (!msg.msg_iov)
		a->total = 0;
	a->peer = (__u64)msg.msg_name;
	emit_message();
	return end_data(a);
}

/* sendmmsg, recvmmsg: one record per message, up to KINDLING_MAX_MMSG. */
static __always_inline int exit_mmsg(struct emit_args *a, long ret, __u32 direction)
{
	__u64 vec;

	begin_data(a, ret, direction);
	if (ret <= 0) {
		emit_data();
		return end_data(a);
	}
	vec = a->p.buf;
	for (int i = 0; i < KINDLING_MAX_MMSG; i++) {
		struct mmsghdr mm;

		if (i >= ret)
			break;
		if (bpf_probe_read_user(&mm, sizeof(mm), (void *)(vec + i * sizeof(struct mmsghdr)))) {
			count_loss(KL_READ_FAILED);
			break;
		}
		a->data = (__u64)mm.msg_hdr.msg_iov;
		a->iovcnt = mm.msg_hdr.msg_iovlen ? mm.msg_hdr.msg_iovlen : 1;
		a->total = mm.msg_len;
		a->peer = (__u64)mm.msg_hdr.msg_name;
		a->msg_index = i;
		emit_data();
	}
	return end_data(a);
}

/* sendfile, splice, copy_file_range: bytes moved between a socket and a
 * file or pipe inside the kernel. There is no user buffer to capture, and
 * file pages are not read: the record carries the length moved (len = ret,
 * cap_len = 0, so the whole length counts as uncaptured and is flagged
 * truncated, though not counted as a truncation loss: nothing was cut) and
 * the timing. The direction is the end exit_locate() found the socket at. */
static __always_inline int exit_moved(struct emit_args *a, long ret)
{
	struct ke_data *d;

	begin_data(a, ret, 0);
	d = record_reserve(sizeof(*d));
	if (!d)
		return end_data(a);
	fill_header_cached(&d->hdr, KE_DATA, sizeof(*d), a->now, &a->p);
	fill_sock(&d->sk, KCAST(struct sock, a->p.sock));
	d->hdr.flags = a->total ? KF_TRUNCATED : 0;
	d->ts_enter_ns = a->p.ts;
	d->ret = a->ret;
	d->ino = a->p.ino;
	d->len = a->total;
	d->cap_len = 0;
	d->fd = a->p.fd;
	d->syscall = a->p.syscall;
	d->direction = a->p.dir;
	d->msg_index = 0;
	/* As in emit_data: connected sockets passed the port filter already. */
	record_commit(d, sizeof(*d), d->sk.dport != 0 || ports_wanted(d->sk.sport, d->sk.dport));
	return end_data(a);
}

/* KE_CONNECT, KE_CLOSE (from what their entry parked) and KE_ACCEPT (from
 * exit_locate(), the listening socket, and the new one in `ret`). */
static __always_inline int emit_conn(struct pending *p, long ret, __u64 now)
{
	struct ke_conn *e;
	struct sock *sk;
	__u64 ino = 0;
	__u16 kind, flags = 0;

	e = record_reserve(sizeof(*e));
	if (!e)
		return 0;
	e->ts_enter_ns = p->ts;
	e->ret = ret;
	e->fd = p->fd;
	e->syscall = p->syscall;
	e->ino = p->ino;

	/* On what was parked, like the record's syscall field. */
	switch (p->exit) {
	case EXIT_CLOSE:
		kind = KE_CLOSE;
		e->sk = p->sk;
		break;
	case EXIT_CONNECT:
		kind = KE_CONNECT;
		fill_sock(&e->sk, KCAST(struct sock, p->sock));
		/* A refused connect leaves no peer in the sock: take the argument. */
		if (e->sk.dport == 0 && peer_from_user(&e->sk, p->addr))
			flags = KF_PEER_FROM_ADDR;
		remember_sock(p->sock);
		break;
	default: /* accept, accept4: report the new socket */
		kind = KE_ACCEPT;
		sk = ret >= 0 ? file_to_sock(fd_to_file(ret), &ino) : NULL;
		if (sk) {
			fill_sock(&e->sk, sk);
			e->ino = ino;
			remember_sock((__u64)sk);
		} else {
			fill_sock(&e->sk, KCAST(struct sock, p->sock));
		}
		break;
	}
	fill_header_cached(&e->hdr, kind, sizeof(*e), now, p);
	e->hdr.flags = flags;
	record_commit(e, sizeof(*e), ports_wanted(e->sk.sport, e->sk.dport));
	return 0;
}

static __always_inline int sys_exit_body(unsigned long long *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	long ret = (long)ctx[1];
	struct sys_desc d;
	struct scratch *s;
	struct emit_args *a;

	if (hooks_only)
		return 0;
	d = sys_desc(SYSCALL_NR(regs));
	if (d.exit == EXIT_NONE)
		return 0;
	if (d.exit == EXIT_CONNECT || d.exit == EXIT_CLOSE) {
		struct pending p;

		if (!take_pending(&p) || ret == -EAGAIN)
			return 0;
		return emit_conn(&p, ret, bpf_ktime_get_boot_ns());
	}
	/* Non-blocking servers read until EAGAIN; those calls carry nothing. */
	if (ret == -EAGAIN || !NATIVE_SYSCALL(regs))
		return 0;
	s = scratch_get();
	if (!s)
		return 0;
	a = &s->args;
	/* The arguments, from the saved user registers. */
	a->p.fd = ARG0(regs);
	a->p.buf = 0;
	a->p.addr = 0;
	a->p.count = 0;
	a->fd_in = -1;
	switch (d.args) {
	case ARGS_BUF_ADDR:
		a->p.addr = ARG4(regs);
		/* fall through */
	case ARGS_BUF:
		a->p.buf = ARG1(regs);
		a->p.count = ARG2(regs);
		break;
	case ARGS_MSG:
		a->p.buf = ARG1(regs);
		a->p.count = 1;
		break;
	case ARGS_ADDR:
		a->p.addr = ARG1(regs);
		break;
	case ARGS_OUT_IN:
		a->fd_in = ARG1(regs);
		break;
	case ARGS_IN_OUT:
		a->fd_in = ARG0(regs);
		a->p.fd = ARG2(regs);
		break;
	}
	a->p.syscall = d.ks;
	a->p.exit = d.exit;
	a->p.dir = d.dir;
	if (!exit_locate())
		return 0;
	switch (d.exit) {
	case EXIT_BUF:
		return exit_plain(a, ret, d.dir, false);
	case EXIT_IOV:
		return exit_plain(a, ret, d.dir, true);
	case EXIT_MSG:
		return exit_msg(a, ret, d.dir);
	case EXIT_MMSG:
		return exit_mmsg(a, ret, d.dir);
	case EXIT_ACCEPT:
		return emit_conn(&a->p, ret, a->now);
	case EXIT_MOVED:
		return exit_moved(a, ret);
	}
	return 0;
}
TWIN_PROGRAMS(sys_exit, sys_exit)

/* ---- task names --------------------------------------------------------- */

/* A thread's cached comm and cgroup are read again at its next followed
 * call after an exec or a rename, not up to task_info_ttl_ns later: a
 * forked child that touched a socket before exec'ing curl must not report
 * curl's traffic under its parent's name. Both events are rare. */
static __always_inline void forget_task_info(struct task_struct *task)
{
	struct pending *p;

	if (hooks_only)
		return;
	if (slots_by_tid) {
		__u32 tid = BPF_CORE_READ(task, pid);

		p = bpf_map_lookup_elem(&pending_tid, &tid);
	} else {
		p = bpf_task_storage_get(&pending, task, 0, 0);
	}
	if (p)
		p->info_ts = 0;
}

static __always_inline int on_exec_body(unsigned long long *ctx)
{
	forget_task_info((struct task_struct *)ctx[0]);
	return 0;
}
TWIN_PROGRAMS(sched_process_exec, on_exec)

static __always_inline int on_rename_body(unsigned long long *ctx)
{
	forget_task_info((struct task_struct *)ctx[0]);
	return 0;
}
TWIN_PROGRAMS(task_rename, on_rename)

/* ---- TCP health --------------------------------------------------------- */

/* State changes, retransmits, resets and drops, from TCP and skb
 * tracepoints: they fire in softirq as often as in the process. */

/* Tuple of a packet without a socket, seen as received: local = destination. */
static __always_inline bool parse_skb(const struct sk_buff *skb, struct ke_sock *out)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	struct net_device *dev;
	__u16 ports[2];

	if (proto == ETH_P_IP) {
		struct iphdr ip;
		__u8 vihl;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		__builtin_memcpy(&vihl, &ip, 1);
		out->family = AF_INET;
		out->protocol = ip.protocol;
		__builtin_memcpy(out->daddr, &ip.saddr, 4);
		__builtin_memcpy(out->saddr, &ip.daddr, 4);
		if (th == (__u16)~0U || th <= nh)
			th = nh + (vihl & 0xf) * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		out->family = AF_INET6;
		out->protocol = ip6.nexthdr;
		__builtin_memcpy(out->daddr, &ip6.saddr, 16);
		__builtin_memcpy(out->saddr, &ip6.daddr, 16);
		if (th == (__u16)~0U || th <= nh)
			th = nh + sizeof(ip6);
	} else {
		return false;
	}
	if (out->protocol != IPPROTO_TCP && out->protocol != IPPROTO_UDP)
		return false;
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + th))
		return false;
	out->dport = bpf_ntohs(ports[0]);
	out->sport = bpf_ntohs(ports[1]);
	/* the namespace of the device it came in on, if it still names one */
	dev = BPF_CORE_READ(skb, dev);
	if (dev)
		out->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	return true;
}

static __always_inline int emit_tcp(const struct sock *sk, __u16 kind, __u8 old_state,
				    __u8 new_state, __u8 reset_dir)
{
	struct tcp_sock *tp = KCAST(struct tcp_sock, sk);
	struct ke_tcp *e;

	if (hooks_only || !sock_wanted((__u64)sk))
		return 0;
	e = record_reserve(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, kind, sizeof(*e), bpf_ktime_get_boot_ns());
	fill_sock(&e->sk, sk);
	e->srtt_us = KGET(tp, srtt_us) >> 3;
	e->rttvar_us = KGET(tp, mdev_us) >> 2;
	e->total_retrans = KGET(tp, total_retrans);
	e->snd_cwnd = KGET(tp, snd_cwnd);
	e->old_state = old_state;
	e->new_state = new_state;
	e->reset_dir = reset_dir;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	record_commit(e, sizeof(*e), ports_wanted(e->sk.sport, e->sk.dport));
	return 0;
}

static __always_inline int on_state_body(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	int oldstate = (int)ctx[1], newstate = (int)ctx[2];

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return emit_tcp(sk, KE_TCP_STATE, oldstate, newstate, 0);
}
TWIN_PROGRAMS(inet_sock_set_state, on_state)

static __always_inline int on_retransmit_body(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return emit_tcp(sk, KE_TCP_RETRANSMIT, state, state, 0);
}
TWIN_PROGRAMS(tcp_retransmit_skb, on_retransmit)

static __always_inline int on_receive_reset_body(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return emit_tcp(sk, KE_TCP_RESET, state, state, KR_RECEIVED);
}
TWIN_PROGRAMS(tcp_receive_reset, on_receive_reset)

static __always_inline int on_send_reset_body(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	const struct sk_buff *skb = (const struct sk_buff *)ctx[1];
	struct ke_tcp *e;
	__u8 state;

	if (sk) {
		state = BPF_CORE_READ(sk, __sk_common.skc_state);
		return emit_tcp(sk, KE_TCP_RESET, state, state, KR_SENT);
	}
	/* No socket (e.g. a SYN to a closed port): describe it from the packet. */
	if (hooks_only || filters_on() || !skb)
		return 0;
	e = record_reserve(sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_header(&e->hdr, KE_TCP_RESET, sizeof(*e), bpf_ktime_get_boot_ns());
	if (!parse_skb(skb, &e->sk) || !ports_wanted(e->sk.sport, e->sk.dport)) {
		record_commit(e, sizeof(*e), false);
		return 0;
	}
	e->hdr.flags = KF_NO_SOCK;
	e->reset_dir = KR_SENT;
	record_commit(e, sizeof(*e), true);
	return 0;
}
TWIN_PROGRAMS(tcp_send_reset, on_send_reset)

/* The drop reason: the tracepoint's third argument since 5.17, where its
 * enum appeared (before, every kfree_skb is a drop of unknown reason, 0).
 * Its values differ by kernel (SKB_CONSUMED is 1 from 6.3 on; on 6.1 1 is
 * NOT_SPECIFIED), so they are relocated to the running kernel's, and user
 * space names them from that kernel's BTF. Returns -1 for a freed packet
 * that was no drop. */
static __always_inline long drop_reason(unsigned long long *ctx)
{
	long reason;

	if (!bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	reason = (long)ctx[2];
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_NOT_DROPPED_YET) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET))
		return -1;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return -1;
	return reason;
}

static __always_inline int on_kfree_skb_body(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	void *location = (void *)ctx[1];
	long reason = drop_reason(ctx);
	struct ke_drop *e;
	struct sock *sk;

	if (hooks_only || reason < 0)
		return 0;
	e = record_reserve(sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_header(&e->hdr, KE_SKB_DROP, sizeof(*e), bpf_ktime_get_boot_ns());
	sk = ARG_REG(skb, sk);
	if (sk) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		__u16 proto = BPF_CORE_READ(sk, sk_protocol);

		if ((family != AF_INET && family != AF_INET6) ||
		    (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || !sock_wanted((__u64)sk))
			goto discard;
		fill_sock(&e->sk, sk);
	} else {
		if (filters_on() || !parse_skb(skb, &e->sk))
			goto discard;
		e->hdr.flags = KF_NO_SOCK;
	}
	if (!ports_wanted(e->sk.sport, e->sk.dport))
		goto discard;
	e->location = (__u64)location;
	e->reason = reason;
	record_commit(e, sizeof(*e), true);
	return 0;
discard:
	record_commit(e, sizeof(*e), false);
	return 0;
}
TWIN_PROGRAMS(kfree_skb, on_kfree_skb)
