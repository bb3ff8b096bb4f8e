// SPDX-License-Identifier: GPL-2.0
/*
 * Kindling packet tracer: follows the packets of chosen flows through the
 * host's network stack and virtual network (veth pairs, bridges, routing,
 * NAT, netfilter, network namespaces) and writes one ke_packet record per
 * hop into a ring buffer of its own.
 *
 * A separate object from kindling.bpf.c: it is loaded and attached only
 * while a trace runs, so an agent that does not trace packets pays nothing.
 *
 * Only tracepoints (no kprobes, no fentry on the target kernels): each
 * program twice, as tp_btf (its typed sk_buff read with plain loads: the
 * default) and as raw_tp (every field a BPF_CORE_READ: for kernels without
 * BTF, run with an external BTF file); the loader keeps one of each pair:
 *   net:net_dev_queue        a device queues the packet to transmit
 *   net:netif_receive_skb    a device receives it (veth peers, bridges too)
 *   skb:kfree_skb            it is dropped, with the reason (5.17+)
 *   skb:consume_skb          it is freed after use
 *   skb:skb_copy_datagram_iovec  its bytes are copied to a process
 *
 * A packet is the same sk_buff across a veth pair into another namespace,
 * through a bridge, routing and NAT, so it is followed by its address: the
 * first hop that matches the filter starts a trace (a `tracked` entry),
 * later hops of the same sk_buff belong to it even when NAT has rewritten
 * the tuple. Ports seen after a translation are learned so that replies,
 * which are new sk_buffs carrying the translated tuple, match too.
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
#define MAX_PORTS 8

/* ---- configuration (rodata, set by the loader) --------------------------- */

/* The raw_tp twins are loaded (see the top): fields are read with helpers. */
const volatile __u8 raw_tracepoints = 0;

/* A field through a pointer the program was handed or read: a plain load
 * in a tp_btf program, a helper read in a raw_tp one (the verifier drops
 * the way not taken: the flag is a constant at load). */
#define KREAD(ptr, field)                                                          \
	({                                                                         \
		typeof(ptr) __kp = (ptr);                                          \
		raw_tracepoints ? BPF_CORE_READ(__kp, field) : __kp->field;        \
	})

#define TWIN_PROGRAMS(tp, name)                                                    \
	SEC("tp_btf/" #tp)                                                         \
	int name(unsigned long long *ctx)                                          \
	{                                                                          \
		return name##_body(ctx);                                           \
	}                                                                          \
	SEC("raw_tp/" #tp)                                                         \
	int name##_raw(unsigned long long *ctx)                                    \
	{                                                                          \
		return name##_body(ctx);                                           \
	}

/* IP protocol to follow: 6, 17, or 0 for both. */
const volatile __u8 filter_proto = 0;
/* Ports either end of a packet must have (none: any port). */
const volatile __u16 filter_ports[MAX_PORTS] = {};
const volatile __u8 filter_nports = 0;
/* An address either end must have: family 0 = any address. */
const volatile __u16 filter_family = 0;
const volatile __u8 filter_addr[16] = {};
/* Start following a packet only in this network namespace (0: any); once
 * followed, it is followed everywhere. */
const volatile __u32 filter_netns = 0;
/* Follow the packets of one flow in `sample_every` (by a hash of the flow's
 * addresses and ports, so a flow is in or out at every hop). */
const volatile __u32 sample_every = 1;
/* Records per CPU per second at most; beyond, hops are counted as lost. */
const volatile __u64 budget_per_sec = 50000;
/* A tracked sk_buff address not seen for this long is a new packet (the
 * memory was freed without a tracepoint and reused). */
const volatile __u64 reuse_after_ns = 1000000000ULL;
/* Records each CPU submits before it wakes the reader, which also polls
 * with a timeout: waking it for every record under load cost more than
 * writing the record. */
const volatile __u64 wakeup_records = 1;

/* Dummy instance so the skeleton carries the type for layout checks. */
struct ke_packet _ke_packet = {};

/* Set once the first packet is followed / the first port learned: until
 * then the programs that only end followed packets return at once, and
 * the filter skips the learned-ports lookups (what a trace whose filter
 * matches nothing costs every packet of the host). */
__u8 following = 0;
__u8 learned_any = 0;

/* ---- maps --------------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} packets SEC(".maps");

/* A packet being followed, by sk_buff address. */
struct tracked {
	__u64 trace_id;
	__u64 last_ts;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 protocol;
	/* its bytes reached a process: the next hop at this address is
	 * another packet (the kernel frees delivered packets silently) */
	__u8 delivered;
	/* what NAT leaves alone (IP id and length, TCP sequence and
	 * acknowledgement): another value at this address is another packet */
	__u32 fp;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tracked);
} tracked SEC(".maps");

/* Ports a followed packet took after NAT: their replies are followed too. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} learned_ports SEC(".maps");

/* Per CPU: the record budget's window, the trace id sequence and the loss
 * counters user space reads (enum pkt_loss). */
enum pkt_loss {
	PL_RING_FULL = 0, /* ring buffer full */
	PL_BUDGET = 1,	  /* over budget_per_sec */
	PL_MAX = 2,
};

struct cpu_state {
	__u64 window_start;
	__u64 window_used;
	__u64 seq;
	__u64 lost[PL_MAX];
	__u64 unwoken; /* records submitted since this CPU last woke the reader */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_state SEC(".maps");

/* ---- helpers ------------------------------------------------------------ */

struct pkt_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 protocol;
	__u8 tcp_flags;
	__u32 tcp_seq;
	__u32 fp; /* see struct tracked */
	__u16 ip_id;
};

/* The IP and TCP/UDP headers at `l3` of a packet of `proto` (host order);
 * false when it is not TCP or UDP over IPv4/IPv6 (or the memory cannot be
 * read). */
/* Bytes read at the IP header in one helper call: an IPv4 header without
 * options or an IPv6 header without extensions, and the first 20 bytes of
 * TCP or UDP after it (reading past a short packet's end stays inside its
 * buffer). One read per hop instead of two is most of a miss's cost. */
#define HEADERS_LEN 60

static __always_inline bool read_tuple(__u16 proto, unsigned char *l3, struct pkt_tuple *t)
{
	__u8 h[HEADERS_LEN];
	__u8 l4[20];
	__u32 l4off;
	__u8 vihl;

	if (bpf_probe_read_kernel(h, sizeof(h), l3))
		return false;
	vihl = h[0];
	if (proto == ETH_P_IP) {
		struct iphdr ip;

		__builtin_memcpy(&ip, h, sizeof(ip));
		if ((vihl >> 4) != 4)
			return false;
		t->family = AF_INET;
		t->protocol = ip.protocol;
		t->ip_id = bpf_ntohs(ip.id);
		t->fp = ((__u32)t->ip_id << 16) ^ bpf_ntohs(ip.tot_len);
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		/* a fragment past the first has no ports */
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return false;
		l4off = (vihl & 0xf) * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		__builtin_memcpy(&ip6, h, sizeof(ip6));
		if ((vihl >> 4) != 6)
			return false;
		t->family = AF_INET6;
		t->protocol = ip6.nexthdr;
		t->fp = bpf_ntohs(ip6.payload_len);
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		l4off = sizeof(ip6);
	} else {
		return false;
	}
	if (t->protocol != IPPROTO_TCP && t->protocol != IPPROTO_UDP)
		return false;
	/* (constant offsets: the verifier reads the stack at known places) */
	if (l4off == 20)
		__builtin_memcpy(l4, h + 20, sizeof(l4));
	else if (l4off == 40)
		__builtin_memcpy(l4, h + 40, sizeof(l4));
	else if (bpf_probe_read_kernel(l4, sizeof(l4), l3 + l4off))
		return false;
	t->sport = ((__u16)l4[0] << 8) | l4[1];
	t->dport = ((__u16)l4[2] << 8) | l4[3];
	if (t->protocol == IPPROTO_TCP) {
		__u32 seq, ack;

		__builtin_memcpy(&seq, l4 + 4, 4);
		__builtin_memcpy(&ack, l4 + 8, 4);
		t->tcp_seq = bpf_ntohl(seq);
		t->tcp_flags = l4[13];
		t->fp ^= t->tcp_seq ^ (bpf_ntohl(ack) * 0x9e3779b1u);
	} else {
		t->fp ^= (((__u32)l4[4] << 8) | l4[5]) << 8;
	}
	return true;
}

static __always_inline bool port_wanted(__u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i < filter_nports && filter_ports[i] == port)
			return true;
	}
	return learned_any && bpf_map_lookup_elem(&learned_ports, &port) != NULL;
}

static __always_inline bool addr_is(const __u8 *a)
{
	if (filter_family == AF_INET)
		return *(__u32 *)a == *(const volatile __u32 *)filter_addr;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (a[i] != filter_addr[i])
			return false;
	}
	return true;
}

static __always_inline __u32 dev_netns(const struct net_device *dev)
{
	return KREAD(KREAD(dev, nd_net.net), ns.inum);
}

/* A hash of the flow that is the same both ways (for sampling). */
static __always_inline __u32 flow_hash(const struct pkt_tuple *t)
{
	__u32 a = *(__u32 *)t->saddr ^ *(__u32 *)&t->saddr[12];
	__u32 b = *(__u32 *)t->daddr ^ *(__u32 *)&t->daddr[12];
	__u32 h = (a ^ b) * 0x9e3779b1u;

	h ^= ((__u32)t->sport ^ (__u32)t->dport) * 0x85ebca6bu;
	h ^= t->protocol;
	h ^= h >> 15;
	return h * 0xc2b2ae35u;
}

/* Whether to start following a packet; the namespace (the costliest
 * read) is looked at last. */
static __always_inline bool wanted(const struct pkt_tuple *t, const struct net_device *dev)
{
	if (filter_proto && t->protocol != filter_proto)
		return false;
	if (filter_nports && !port_wanted(t->sport) && !port_wanted(t->dport))
		return false;
	if (filter_family &&
	    (t->family != filter_family || (!addr_is(t->saddr) && !addr_is(t->daddr))))
		return false;
	if (sample_every > 1 && flow_hash(t) % sample_every)
		return false;
	if (filter_netns && (!dev || dev_netns(dev) != filter_netns))
		return false;
	return true;
}

static __always_inline struct cpu_state *state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_state, &zero);
}

/* Hands a record to the reader, waking it once per wakeup_records. */
static __always_inline void submit(struct ke_packet *e)
{
	struct cpu_state *s = state();
	__u64 flags = BPF_RB_FORCE_WAKEUP;

	if (s && ++s->unwoken < wakeup_records)
		flags = BPF_RB_NO_WAKEUP;
	else if (s)
		s->unwoken = 0;
	bpf_ringbuf_submit(e, flags);
}

/* Room for one record, within the CPU's budget; NULL (counted) otherwise. */
static __always_inline struct ke_packet *reserve(__u64 now)
{
	struct cpu_state *s = state();
	struct ke_packet *e;

	if (!s)
		return NULL;
	if (now - s->window_start >= 1000000000ULL) {
		s->window_start = now;
		s->window_used = 0;
	}
	if (s->window_used >= budget_per_sec) {
		s->lost[PL_BUDGET]++;
		return NULL;
	}
	e = bpf_ringbuf_reserve(&packets, sizeof(*e), 0);
	if (!e) {
		s->lost[PL_RING_FULL]++;
		return NULL;
	}
	s->window_used++;
	return e;
}

/* A zeroed record of `now` with the header of the task on the CPU. */
static __always_inline void start_record(struct ke_packet *e, __u64 now)
{
	__u64 id = bpf_get_current_pid_tgid();

	__builtin_memset(e, 0, sizeof(*e));
	e->hdr.kind = KE_PACKET;
	e->hdr.size = sizeof(*e);
	e->hdr.ts_ns = now;
	e->hdr.pid = id >> 32;
	e->hdr.tid = (__u32)id;
	e->hdr.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->hdr.comm, sizeof(e->hdr.comm));
}

static __always_inline __u64 next_trace_id(void)
{
	struct cpu_state *s = state();

	if (!s)
		return 0;
	s->seq++;
	return ((__u64)bpf_get_smp_processor_id() << 48) | s->seq;
}

/* A kernel pointer, not a value sharing its word (UDP keeps a scratch
 * value where skb->dev was by the time it queues to a socket). */
static __always_inline bool kernel_pointer(const void *p)
{
	return ((__u64)p >> 48) == 0xffff;
}



static __always_inline void copy_tuple_to_record(struct ke_packet *e, const struct pkt_tuple *t)
{
	__builtin_memcpy(e->sk.saddr, t->saddr, 16);
	__builtin_memcpy(e->sk.daddr, t->daddr, 16);
	e->sk.sport = t->sport;
	e->sk.dport = t->dport;
	e->sk.family = t->family;
	e->sk.protocol = t->protocol;
	e->tcp_seq = t->tcp_seq;
	e->tcp_flags = t->tcp_flags;
	e->ip_id = t->ip_id;
}

static __always_inline bool same16(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

static __always_inline bool same_tuple(const struct tracked *k, const struct pkt_tuple *t)
{
	return k->sport == t->sport && k->dport == t->dport && same16(k->saddr, t->saddr) &&
	       same16(k->daddr, t->daddr);
}

/* One hop of `skb` on `dev` (NULL: none), its IP header at `l3`. */
/* Where the IP header starts: at skb->data once the device took the MAC
 * header off (receive), else where the IP layer put it. */
static __always_inline unsigned char *l3_of(const struct sk_buff *skb, bool received)
{
	if (received)
		return KREAD(skb, data);
	return KREAD(skb, head) + KREAD(skb, network_header);
}

/* One hop of `skb` at `point`. */
static __always_inline int hop(const struct sk_buff *skb, __u8 point, __u32 reason,
			       __u64 location)
{
	__u64 key = (__u64)skb, now;
	struct pkt_tuple t = {};
	struct tracked *k, fresh = {};
	struct net_device *dev;
	struct ke_packet *e;
	__u32 netns = 0;
	__u16 pflags = 0;
	__u16 proto = bpf_ntohs(KREAD(skb, protocol));

	/* ARP and the like first: one read */
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	if (!read_tuple(proto, l3_of(skb, point == KP_RECEIVE), &t))
		return 0;
	dev = KREAD(skb, dev);
	/* (a plain load through a stale value faults safely: only a helper
	 * read needs the check) */
	if (raw_tracepoints && dev && !kernel_pointer(dev))
		dev = NULL;
	k = following ? bpf_map_lookup_elem(&tracked, &key) : NULL;
	/* the address of a packet freed without a tracepoint, now another's */
	if (k && (bpf_ktime_get_boot_ns() - k->last_ts > reuse_after_ns || k->delivered ||
		  k->fp != t.fp))
		k = NULL;
	if (!k && !wanted(&t, dev))
		return 0;
	now = bpf_ktime_get_boot_ns();
	if (k) {
		if (!same_tuple(k, &t)) {
			__u8 one = 1;

			/* NAT rewrote it: learn the new ports so replies match */
			pflags |= KPF_TRANSLATED;
			if (filter_nports) {
				bpf_map_update_elem(&learned_ports, &t.sport, &one, BPF_ANY);
				bpf_map_update_elem(&learned_ports, &t.dport, &one, BPF_ANY);
				learned_any = 1;
			}
			__builtin_memcpy(k->saddr, t.saddr, 16);
			__builtin_memcpy(k->daddr, t.daddr, 16);
			k->sport = t.sport;
			k->dport = t.dport;
		}
		k->last_ts = now;
	} else {
		following = 1;
		fresh.trace_id = next_trace_id();
		fresh.last_ts = now;
		__builtin_memcpy(fresh.saddr, t.saddr, 16);
		__builtin_memcpy(fresh.daddr, t.daddr, 16);
		fresh.sport = t.sport;
		fresh.dport = t.dport;
		fresh.family = t.family;
		fresh.protocol = t.protocol;
		fresh.fp = t.fp;
		if (point != KP_DROP)
			bpf_map_update_elem(&tracked, &key, &fresh, BPF_ANY);
		k = &fresh;
	}
	e = reserve(now);
	if (!e)
		return 0;
	if (dev)
		netns = dev_netns(dev);
	start_record(e, now);
	copy_tuple_to_record(e, &t);
	e->sk.netns = netns;
	e->skb = key;
	e->trace_id = k->trace_id;
	e->len = KREAD(skb, len);
	e->point = point;
	e->reason = reason;
	e->location = location;
	if (dev) {
		e->ifindex = KREAD(dev, ifindex);
		bpf_core_read(e->ifname, sizeof(e->ifname), &dev->name);
	} else {
		pflags |= KPF_NO_DEVICE;
	}
	e->pflags = pflags;
	submit(e);
	if (point == KP_DROP)
		bpf_map_delete_elem(&tracked, &key);
	return 0;
}

/* The end of a followed packet that needs no header: freed after use, or
 * its bytes copied to a process. Untracked packets cost one lookup. */
static __always_inline int end_of(const struct sk_buff *skb, __u8 point)
{
	__u64 key = (__u64)skb, now;
	struct tracked *k;
	struct ke_packet *e;
	struct sock *sk;

	if (!following)
		return 0;
	k = bpf_map_lookup_elem(&tracked, &key);
	now = bpf_ktime_get_boot_ns();
	if (!k || now - k->last_ts > reuse_after_ns)
		return 0;
	e = reserve(now);
	if (!e)
		return 0;
	start_record(e, now);
	__builtin_memcpy(e->sk.saddr, k->saddr, 16);
	__builtin_memcpy(e->sk.daddr, k->daddr, 16);
	e->sk.sport = k->sport;
	e->sk.dport = k->dport;
	e->sk.family = k->family;
	e->sk.protocol = k->protocol;
	sk = KREAD(skb, sk);
	if (sk && (!raw_tracepoints || kernel_pointer(sk)))
		e->sk.netns = KREAD(KREAD(sk, __sk_common.skc_net.net), ns.inum);
	e->skb = key;
	e->trace_id = k->trace_id;
	e->len = KREAD(skb, len);
	e->point = point;
	e->pflags = KPF_NO_DEVICE;
	submit(e);
	if (point == KP_CONSUME) {
		bpf_map_delete_elem(&tracked, &key);
	} else {
		k->last_ts = now;
		k->delivered = 1;
	}
	return 0;
}

/* ---- programs ----------------------------------------------------------- */

static __always_inline int on_queue_body(unsigned long long *ctx)
{
	/* the MAC header may lead at skb->data: the IP layer set network_header */
	return hop((struct sk_buff *)ctx[0], KP_QUEUE, 0, 0);
}
TWIN_PROGRAMS(net_dev_queue, on_queue)

static __always_inline int on_receive_body(unsigned long long *ctx)
{
	/* the MAC header is pulled; network_header is not reset yet */
	return hop((struct sk_buff *)ctx[0], KP_RECEIVE, 0, 0);
}
TWIN_PROGRAMS(netif_receive_skb, on_receive)

static __always_inline int on_drop_body(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = 0;

	/* the reason is the third argument since 5.17, where its enum came:
	 * on older kernels this branch is dead at load, so the argument is
	 * never read (reading it would fail the load or the attach) */
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED)) {
		reason = (__u32)ctx[2];
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_NOT_DROPPED_YET) &&
		    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET))
			return 0;
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
		    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
			return end_of(skb, KP_CONSUME);
	}
	return hop(skb, KP_DROP, reason, ctx[1]);
}
TWIN_PROGRAMS(kfree_skb, on_drop)

static __always_inline int on_consume_body(unsigned long long *ctx)
{
	return end_of((struct sk_buff *)ctx[0], KP_CONSUME);
}
TWIN_PROGRAMS(consume_skb, on_consume)

static __always_inline int on_deliver_body(unsigned long long *ctx)
{
	return end_of((struct sk_buff *)ctx[0], KP_DELIVER);
}
TWIN_PROGRAMS(skb_copy_datagram_iovec, on_deliver)
