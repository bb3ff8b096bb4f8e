/* SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0) */
/*
 * Kindling event ABI: the single definition of every record the kernel side
 * writes into the ring buffer (and that a capture file stores verbatim).
 *
 * Rules:
 *  - every record starts with `struct ke_header`; `size` is the whole record
 *    including header, body and trailing payload;
 *  - fields are naturally aligned, padding is explicit (`_pad*`), so the
 *    layout is identical for clang -target bpf and the Rust mirror in
 *    kindling-probe/src/abi.rs (checked at compile time there);
 *  - all integers are in host byte order, ports included;
 *  - bump KINDLING_ABI_VERSION on any change of a layout or of a field's
 *    meaning. New enum values alone (a new ke_syscall) need no bump: a
 *    reader that does not know one still decodes the record (Rust:
 *    Syscall::Unknown) and its len/cap_len/direction mean what they did.
 *    New flag bits need none either when a reader that ignores them still
 *    reads true bytes (KF_CONTINUED: the parts read as syscalls).
 */
#ifndef KINDLING_H
#define KINDLING_H

#define KINDLING_ABI_VERSION 2

/* Largest payload captured per syscall (per message for *mmsg). Power of two. */
#define KINDLING_MAX_SNAPLEN 16384
/* Iovecs walked per readv/writev/sendmsg/recvmsg message. */
#define KINDLING_MAX_IOV 16
/* Parts one syscall's payload is split into at most when captured in full
 * (framing budget): 16 x 16 KiB = 256 KiB per syscall. */
#define KINDLING_MAX_PARTS 16
/* Messages reported per sendmmsg/recvmmsg call. */
#define KINDLING_MAX_MMSG 8
#define KINDLING_COMM_LEN 16

/* Record kinds (ke_header.kind). */
enum ke_kind {
	KE_DATA = 1,	      /* struct ke_data + payload */
	KE_CONNECT = 2,	      /* struct ke_conn */
	KE_ACCEPT = 3,	      /* struct ke_conn */
	KE_CLOSE = 4,	      /* struct ke_conn */
	KE_TCP_STATE = 5,     /* struct ke_tcp: old_state -> new_state */
	KE_TCP_RETRANSMIT = 6, /* struct ke_tcp */
	KE_TCP_RESET = 7,     /* struct ke_tcp: reset_dir says sent or received */
	KE_TCP_RTT = 8,	      /* struct ke_tcp: rate-limited srtt sample */
	KE_SKB_DROP = 9,      /* struct ke_drop */
	KE_LOST = 10,	      /* struct ke_lost: written by user space, never by the kernel */
	KE_PACKET = 11,	      /* struct ke_packet: one hop of a traced packet (packets.bpf.c) */
};

/* Syscalls (ke_data.syscall, ke_conn.syscall). */
enum ke_syscall {
	KS_READ = 1,
	KS_WRITE = 2,
	KS_READV = 3,
	KS_WRITEV = 4,
	KS_SENDTO = 5,
	KS_RECVFROM = 6,
	KS_SENDMSG = 7,
	KS_RECVMSG = 8,
	KS_SENDMMSG = 9,
	KS_RECVMMSG = 10,
	KS_CONNECT = 11,
	KS_ACCEPT = 12,
	KS_ACCEPT4 = 13,
	KS_CLOSE = 14,
	/* Bytes moved between a socket and a file or pipe without a user
	 * buffer: records carry len and timing, cap_len = 0. */
	KS_SENDFILE = 15,
	KS_SPLICE = 16,
	KS_COPY_FILE_RANGE = 17,
};

/* ke_header.flags */
#define KF_TRUNCATED (1 << 0)	  /* payload longer than captured bytes (for
				   * KS_SENDFILE/SPLICE/COPY_FILE_RANGE: len > 0) */
#define KF_READ_FAILED (1 << 1)	  /* user memory could not be read */
#define KF_PEER_FROM_ADDR (1 << 2) /* peer taken from the syscall's sockaddr */
#define KF_NO_SOCK (1 << 3)	  /* no socket: tuple parsed from packet headers */
#define KF_CONTINUED (1 << 4)	  /* this syscall's payload goes on in the next
				   * data record of the same thread: a TCP
				   * syscall captured in full under the framing
				   * budget is split into parts of at most
				   * KINDLING_MAX_SNAPLEN bytes; each part's len
				   * is its own length (ret is the syscall's) */

/* ke_data.direction */
#define KD_EGRESS 0  /* the process sent these bytes */
#define KD_INGRESS 1 /* the process received these bytes */

/* ke_tcp.reset_dir */
#define KR_SENT 1
#define KR_RECEIVED 2

/* Loss counters, indices into the per-CPU `losses` array. */
enum ke_loss {
	KL_RING_FULL = 0,	/* record dropped: ring buffer full */
	KL_READ_FAILED = 1,	/* payload or argument read from user memory failed */
	KL_TRUNCATED = 2,	/* payload cut at snaplen / iovec limit (record kept) */
	KL_PENDING_FULL = 3,	/* in-flight syscall table full: call not reported */
	KL_MAX = 4,
};

struct ke_header { /* 48 bytes */
	__u16 kind;
	__u16 flags;
	__u32 size;   /* whole record, header + body + payload */
	__u64 ts_ns;  /* CLOCK_BOOTTIME; syscall exit for syscall records */
	__u32 pid;    /* thread group id */
	__u32 tid;
	__u64 cgroup_id;
	char comm[KINDLING_COMM_LEN];
};

/* Socket identity and addresses, from the process' point of view. */
struct ke_sock { /* 56 bytes */
	__u64 sock;	  /* kernel address of struct sock: identity while it lives */
	__u8 saddr[16];	  /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];	  /* remote (peer) address */
	__u16 sport;	  /* local port */
	__u16 dport;	  /* remote port */
	__u16 family;	  /* AF_INET or AF_INET6 */
	__u8 protocol;	  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 state;	  /* sk_state when the record was made */
	__u32 netns;	  /* inode of the socket's network namespace (as in
			   * /proc/PID/ns/net); for a packet without a socket,
			   * its device's; 0 when unknown. Since ABI 2. */
	__u32 _pad;
};

struct ke_data { /* 144 bytes, then cap_len payload bytes */
	struct ke_header hdr;
	struct ke_sock sk;
	__u64 ts_enter_ns; /* = hdr.ts_ns: data calls are captured at exit alone */
	__s64 ret;	   /* syscall return value */
	__u64 ino;	   /* socket inode, as in /proc/PID/fd */
	__u32 len;	   /* true payload length of this message */
	__u32 cap_len;	   /* payload bytes that follow */
	__s32 fd;
	__u8 syscall;	   /* enum ke_syscall */
	__u8 direction;	   /* KD_* */
	__u16 msg_index;   /* message index within sendmmsg/recvmmsg, else 0 */
};

struct ke_conn { /* 136 bytes: connect, accept, close */
	struct ke_header hdr;
	struct ke_sock sk;
	__u64 ts_enter_ns; /* connect, close: the entry; accept: = hdr.ts_ns */
	__s64 ret; /* connect: 0/-errno; accept: new fd; close: 0/-errno */
	__u64 ino;
	__s32 fd;  /* the socket's fd (for accept: the listening fd) */
	__u8 syscall;
	__u8 _pad[3];
};

struct ke_tcp { /* 128 bytes: state change, retransmit, reset, rtt */
	struct ke_header hdr;
	struct ke_sock sk;
	__u32 srtt_us;	     /* smoothed RTT */
	__u32 rttvar_us;     /* RTT mean deviation */
	__u32 total_retrans;
	__u32 snd_cwnd;
	__u8 old_state;
	__u8 new_state;
	__u8 reset_dir;	     /* KR_* */
	__u8 _pad[5];
};

struct ke_drop { /* 120 bytes: a TCP/UDP packet freed with a drop reason */
	struct ke_header hdr;
	struct ke_sock sk;   /* packet source in saddr/sport, destination in daddr/dport */
	__u64 location;	     /* kernel text address that dropped it */
	__u32 reason;	     /* enum skb_drop_reason */
	__u32 _pad;
};

/* A marker the recorder writes into a capture where the kernel's loss
 * counters grew: `records` records were lost just before it. Replay hands
 * it to the pipeline, which then trusts nothing that was in flight. */
struct ke_lost { /* 112 bytes */
	struct ke_header hdr;
	struct ke_sock sk;   /* zero: a loss belongs to no socket */
	__u64 records;
};

/* Where on its way a traced packet was seen (ke_packet.point). */
enum ke_point {
	KP_QUEUE = 1,	/* queued for transmission on a device (net:net_dev_queue) */
	KP_RECEIVE = 2, /* received by a device (net:netif_receive_skb) */
	KP_DROP = 3,	/* freed as a drop (skb:kfree_skb), with its reason */
	KP_CONSUME = 4, /* freed after use (skb:consume_skb) */
	KP_DELIVER = 5, /* its bytes copied to a process (skb:skb_copy_datagram_iovec) */
};

/* ke_packet.flags */
#define KPF_TRANSLATED (1 << 0) /* the tuple differs from the previous hop's: NAT */
#define KPF_NO_DEVICE (1 << 1)	/* no device at this point: ifindex/ifname unset */

/* One hop of a packet the packet tracer follows (its own ring buffer,
 * written only while a trace runs). The tuple is the packet's as seen at
 * this hop: saddr/sport its source, daddr/dport its destination; sk.sock
 * is 0 and sk.netns is the device's namespace (the socket's for
 * KP_DELIVER). hdr.pid/comm: the task on the CPU (the reader for
 * KP_DELIVER, often none or softirq otherwise). */
struct ke_packet { /* 168 bytes */
	struct ke_header hdr;
	struct ke_sock sk;
	__u64 skb;	  /* kernel address of the sk_buff */
	__u64 trace_id;	  /* one id per packet followed, the same at every hop */
	__u64 location;	  /* KP_DROP: kernel text address that freed it */
	__u32 ifindex;	  /* device at this hop, in sk.netns */
	__u32 len;	  /* skb->len */
	__u32 reason;	  /* KP_DROP: enum skb_drop_reason (0 before 5.17) */
	__u32 tcp_seq;	  /* TCP: sequence number, to tell segments apart */
	__u16 ip_id;	  /* IPv4 identification */
	__u8 point;	  /* enum ke_point */
	__u8 tcp_flags;	  /* TCP: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10 */
	__u16 pflags;	  /* KPF_* */
	__u8 _pad[2];
	char ifname[16];  /* device name */
};

#endif /* KINDLING_H */
