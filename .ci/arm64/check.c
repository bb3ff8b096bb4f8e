// SPDX-License-Identifier: Apache-2.0
/*
 * The probe on arm64, inside an arm64 kernel (see .ci/arm64.sh): loads
 * bpf/kindling.bpf.c built for arm64 the way kindling-probe's loader does,
 * attaches it, makes loopback TCP exchanges with several syscall families
 * and checks the records that come back. Data calls are captured at their
 * exit alone, their arguments read from the saved registers (arm64 keeps
 * the first one in orig_x0): a wrong register shows as a wrong fd, length
 * or payload here.
 *
 * The Rust crates cannot be built for arm64 on the CI machine (no aarch64
 * standard library), so this small C program stands in for the loader.
 * Usage: check [1 | btf FILE]   (1: helper reads and thread-id slots even
 * where bpf_rdonly_cast exists, which by default they are used only where
 * it does not, as the loader does; btf FILE: as on a kernel without BTF,
 * the raw_tp twins with the kernel's types from FILE)
 * Prints "ARM64-CHECK pass ..." or "ARM64-CHECK FAIL ..." and exits 0/1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "kindling.h"
/* a type of bpf/kindling.bpf.c's .bss, which the skeleton names */
struct loss_slot {
	__u64 n[8];
};
#include "kindling.skel.h"

static int failures;
static unsigned short server_port;

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("ARM64-CHECK FAIL ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	failures++;
}

/* What one data call should come back as. */
struct want {
	int fd;
	__u8 syscall;
	__u8 direction;
	const char *payload;
	int seen;
};

static struct want wants[8];
static int nwants;
static int connects, accepts;

static void expect(int fd, __u8 syscall, __u8 direction, const char *payload)
{
	wants[nwants++] = (struct want){ fd, syscall, direction, payload, 0 };
}

static int on_record(void *ctx, void *data, size_t len)
{
	const struct ke_header *h = data;
	(void)ctx;

	if (len < sizeof(*h))
		return 0;
	if (h->kind == KE_CONNECT || h->kind == KE_ACCEPT) {
		const struct ke_conn *c = data;
		if (c->sk.sport != server_port && c->sk.dport != server_port)
			return 0;
		if (h->kind == KE_CONNECT) {
			connects++;
			if (c->ret != 0 || c->ts_enter_ns >= h->ts_ns)
				fail("connect record: ret %lld, entry %llu, exit %llu",
				     (long long)c->ret, (unsigned long long)c->ts_enter_ns,
				     (unsigned long long)h->ts_ns);
		} else {
			accepts++;
			if (c->ret < 0 || c->sk.sport != server_port)
				fail("accept record: ret %lld, port %u", (long long)c->ret,
				     c->sk.sport);
		}
		return 0;
	}
	if (h->kind != KE_DATA)
		return 0;
	const struct ke_data *d = data;
	if (d->sk.sport != server_port && d->sk.dport != server_port)
		return 0;
	const char *payload = (const char *)(d + 1);
	for (int i = 0; i < nwants; i++) {
		struct want *w = &wants[i];
		size_t n = strlen(w->payload);
		if (d->fd != w->fd || d->syscall != w->syscall)
			continue;
		w->seen++;
		if (d->direction != w->direction || d->len != n || d->cap_len != n ||
		    d->ret != (long long)n || memcmp(payload, w->payload, n) != 0 ||
		    d->ts_enter_ns != h->ts_ns)
			fail("syscall %u on fd %d: direction %u, len %u, cap %u, ret %lld, "
			     "payload '%.*s' (want '%s')",
			     d->syscall, d->fd, d->direction, d->len, d->cap_len,
			     (long long)d->ret, (int)d->cap_len, payload, w->payload);
		return 0;
	}
	fail("unexpected data record: syscall %u on fd %d, %u bytes", d->syscall, d->fd, d->len);
	return 0;
}

static int tcp_pair(int *client, int *server)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	int listener = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (listener < 0 || bind(listener, (void *)&addr, sizeof(addr)) ||
	    listen(listener, 1) || getsockname(listener, (void *)&addr, &alen))
		return -1;
	server_port = ntohs(addr.sin_port);
	*client = socket(AF_INET, SOCK_STREAM, 0);
	if (*client < 0 || connect(*client, (void *)&addr, sizeof(addr)))
		return -1;
	*server = accept(listener, NULL, NULL);
	close(listener);
	return *server < 0 ? -1 : 0;
}

/* As kindling-probe's loader decides: plain loads where the kernel has the
 * bpf_rdonly_cast kfunc (6.2+). */
static int kernel_lacks_rdonly_cast(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	int missing;

	if (!btf)
		return 1;
	missing = btf__find_by_name_kind(btf, "bpf_rdonly_cast", BTF_KIND_FUNC) < 0;
	btf__free(btf);
	return missing;
}

int main(int argc, char **argv)
{
	const char *btf_file = argc > 2 && strcmp(argv[1], "btf") == 0 ? argv[2] : NULL;
	int compat = btf_file || (argc > 1 && atoi(argv[1]) == 1) || kernel_lacks_rdonly_cast();
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf_file);
	const char *skip = btf_file ? "tp_btf/" : "raw_tp/";
	struct kindling *skel;
	struct ring_buffer *rb;
	int c, s, err, ncpus = libbpf_num_possible_cpus();
	char buf[256];

	skel = kindling__open_opts(&opts);
	if (!skel) {
		fail("open: %s", strerror(errno));
		return 1;
	}
	skel->rodata->compat = compat;
	skel->rodata->slots_by_tid = compat;
	skel->rodata->raw_tracepoints = btf_file != NULL;
	skel->rodata->snaplen = 4096;
	skel->rodata->self_tgid = 0; /* this process is the traffic */
	bpf_map__set_autocreate(compat ? skel->maps.pending : skel->maps.pending_tid, false);
	/* one of each pair of twin programs, as the loader picks */
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj)
		if (strncmp(bpf_program__section_name(prog), skip, strlen(skip)) == 0)
			bpf_program__set_autoload(prog, false);
	bpf_map__set_max_entries(skel->maps.scratch_map, ncpus > 0 ? ncpus : 1);
	err = kindling__load(skel);
	if (err) {
		fail("load (verifier): %d", err);
		return 1;
	}
	err = kindling__attach(skel);
	if (err) {
		fail("attach: %d", err);
		return 1;
	}
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_record, NULL, NULL);
	if (!rb) {
		fail("ring buffer: %s", strerror(errno));
		return 1;
	}

	if (tcp_pair(&c, &s)) {
		fail("loopback pair: %s", strerror(errno));
		return 1;
	}
	/* write/read */
	expect(c, KS_WRITE, KD_EGRESS, "GET /arm64 HTTP/1.1\r\n\r\n");
	expect(s, KS_READ, KD_INGRESS, "GET /arm64 HTTP/1.1\r\n\r\n");
	if (write(c, wants[0].payload, strlen(wants[0].payload)) < 0 ||
	    read(s, buf, sizeof(buf)) < 0)
		fail("write/read: %s", strerror(errno));
	/* sendto/recvfrom: fd in orig_x0, buffer and length in x1, x2 */
	expect(s, KS_SENDTO, KD_EGRESS, "HTTP/1.1 200 OK\r\n\r\n");
	expect(c, KS_RECVFROM, KD_INGRESS, "HTTP/1.1 200 OK\r\n\r\n");
	if (send(s, wants[2].payload, strlen(wants[2].payload), 0) < 0 ||
	    recv(c, buf, sizeof(buf), 0) < 0)
		fail("send/recv: %s", strerror(errno));
	/* writev/readv: an iovec array */
	{
		char one[] = "*1\r\n$4\r\n", two[] = "PING\r\n", in[64];
		struct iovec out[2] = { { one, strlen(one) }, { two, strlen(two) } };
		struct iovec back = { in, sizeof(in) };
		expect(c, KS_WRITEV, KD_EGRESS, "*1\r\n$4\r\nPING\r\n");
		expect(s, KS_READV, KD_INGRESS, "*1\r\n$4\r\nPING\r\n");
		if (writev(c, out, 2) < 0 || readv(s, &back, 1) < 0)
			fail("writev/readv: %s", strerror(errno));
	}
	for (int i = 0; i < 10; i++)
		ring_buffer__poll(rb, 50);

	for (int i = 0; i < nwants; i++)
		if (wants[i].seen != 1)
			fail("syscall %u on fd %d seen %d times (want once)", wants[i].syscall,
			     wants[i].fd, wants[i].seen);
	if (connects != 1 || accepts != 1)
		fail("%d connect and %d accept records (want one each)", connects, accepts);
	close(c);
	close(s);
	ring_buffer__free(rb);
	kindling__destroy(skel);
	if (failures)
		return 1;
	printf("ARM64-CHECK pass: %s, %d data calls, connect and accept as made\n",
	       btf_file ? "raw tracepoints with a BTF file"
	       : compat ? "helper reads" : "plain loads", nwants);
	return 0;
}
