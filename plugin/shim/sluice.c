/*
 * sluice: the fast front of the chained CNI plugin.
 *
 * The container runtime execs this binary for every Pod. On this kind of
 * machine a bare exec of the Go plugin takes 4-13 ms by the machine's load
 * (median, BENCHMARKS.md cni_go_plugin_bare_exec_median_ms: its runtime
 * touches ~200 pages, and a page fault costs ~30 us in a VM), more than the
 * whole budget sluice may add to a Pod's ADD. So the runtime-facing binary is this
 * small static C program, and the plugin's logic runs, unchanged, in the
 * helper that is already up:
 *
 *   1. read stdin (the network configuration) and the CNI_* environment;
 *   2. find the helper socket: the "socket" the configuration names, or
 *      /var/run/sluice/cni.sock (front.h; the helper checks the pick);
 *   3. send one exec frame (pkg/cniproto/exec.go) with the Pod's netns fd
 *      attached (SCM_RIGHTS), so the helper needs no view of the host's
 *      mounts or PIDs;
 *   4. print what the helper returns and exit with its code.
 *
 * Whenever that cannot be done exactly - the helper is down, the request is
 * unusual, the helper answers "fall back" - the shim execs sluice-full, the
 * complete Go plugin next to it, with the same stdin and environment. That
 * keeps every behaviour of the Go plugin (fail-open and the spool,
 * failClosed, VERSION, GC, STATUS, skel's error messages) in one place.
 *
 * The shim never interprets the configuration beyond the socket path (all
 * its parsing is in front.h, which plugin/shim/fuzz fuzzes) and never
 * writes partial output: stdout is either the helper's complete answer
 * or sluice-full's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "front.h"

#define FULL_NAME "sluice-full"
/* pkg/cniproto's ExecEnv: integration/binaries
 * TestFrontConstantsMatchTheProtocol fails when it differs, as for the
 * constants in front.h. Built with the flags in plugin/shim/cflags. */
/* The helper bounds ADD by the configured timeout (at most 30 s). */
#define REPLY_TIMEOUT_S 40

static const char *const forwarded_env[] = {
	"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",        "CNI_IFNAME",
	"CNI_ARGS",    "CNI_PATH",        "CNI_NETNS_OVERRIDE", "SLUICE_CNI_DEBUG",
	NULL,
};

/* Every page this process touches costs a fault and an unmap, and both are
 * slow in VMs (tens of microseconds each), so all of it lives in one
 * buffer and nothing is allocated: the request frame (length, magic,
 * environment, then stdin read straight into place), and right after it
 * the reply. A typical request and reply take one or two pages. */
#define REQUEST_MAX (4 + MAX_MESSAGE)
static char frame[2 * REQUEST_MAX];

/* stdin, as far as it fits in the request; a larger config falls back. */
static char *stdin_buf; /* in frame, after the environment */
static size_t stdin_cap;
static size_t stdin_len;
static int stdin_read; /* read_stdin ran: fd 0 is partly consumed */
static int stdin_eof;  /* stdin_buf holds all of stdin */

static void die_cni(const char *msg, const char *details)
{
	/* The CNI error shape skel prints; details carry no quotes we made. */
	printf("{\n    \"code\": 999,\n    \"msg\": \"%s\",\n    \"details\": \"%s\"\n}", msg, details);
	fflush(stdout);
	_exit(1);
}

/* fallback execs sluice-full (next to this binary) with the same stdin. */
static void fallback(void)
{
	char self[4096], full[4096 + sizeof(FULL_NAME)];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		die_cni("sluice: cannot find its own binary", strerror(errno));
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		die_cni("sluice: cannot find its own binary", self);
	*slash = 0;
	snprintf(full, sizeof(full), "%s/%s", self, FULL_NAME);

	if (stdin_read) {
		/* stdin was consumed: hand the same bytes over in a memfd. */
		int fd = memfd_create("sluice-stdin", MFD_CLOEXEC);
		if (fd < 0)
			die_cni("sluice: memfd_create", strerror(errno));
		size_t off = 0;
		while (off < stdin_len) {
			ssize_t w = write(fd, stdin_buf + off, stdin_len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				die_cni("sluice: write stdin copy", strerror(errno));
			off += (size_t)w;
		}
		/* Whatever read_stdin left unread (a huge config) follows. */
		char chunk[8192];
		while (!stdin_eof) {
			ssize_t r = read(0, chunk, sizeof(chunk));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			for (ssize_t off = 0; off < r;) {
				ssize_t w = write(fd, chunk + off, (size_t)(r - off));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					die_cni("sluice: write stdin copy", strerror(errno));
				off += w;
			}
		}
		if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0)
			die_cni("sluice: pass stdin on", strerror(errno));
	}
	char *argv[] = {full, NULL};
	extern char **environ;
	execve(full, argv, environ);
	die_cni("sluice: helper unreachable and " FULL_NAME " cannot be run", strerror(errno));
}

/* read_stdin reads stdin into stdin_buf; -1 when it does not fit (or
 * fails), and the caller falls back with what was read plus the rest. */
static int read_stdin(void)
{
	stdin_read = 1;
	while (stdin_len < stdin_cap) {
		ssize_t n = read(0, stdin_buf + stdin_len, stdin_cap - stdin_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			stdin_eof = 1;
			return 0;
		}
		stdin_len += (size_t)n;
	}
	return -1;
}

int main(void)
{
	const char *cmd = getenv("CNI_COMMAND");
	if (!cmd || (strcmp(cmd, "ADD") && strcmp(cmd, "DEL") && strcmp(cmd, "CHECK")))
		fallback(); /* VERSION, GC, STATUS, or nothing: all the Go plugin's */

	/* The frame: length, magic, NUL-terminated KEY=VALUE entries, an empty
	 * entry, then stdin to the end. */
	size_t n = 4;
	memcpy(frame + n, EXEC_MAGIC, EXEC_MAGIC_LEN);
	n += EXEC_MAGIC_LEN;
	for (const char *const *k = forwarded_env; *k; k++) {
		const char *v = getenv(*k);
		if (!v)
			continue;
		size_t kl = strlen(*k), vl = strlen(v);
		if (n + kl + 1 + vl + 1 >= REQUEST_MAX)
			fallback();
		memcpy(frame + n, *k, kl);
		frame[n + kl] = '=';
		memcpy(frame + n + kl + 1, v, vl);
		frame[n + kl + 1 + vl] = 0;
		n += kl + vl + 2;
	}
	frame[n++] = 0;
	stdin_buf = frame + n;
	stdin_cap = REQUEST_MAX - n;
	if (read_stdin() != 0)
		fallback();
	n += stdin_len;

	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (!front_socket(stdin_buf, stdin_len, path, sizeof(path)))
		fallback();
	uint32_t body = (uint32_t)(n - 4);
	frame[0] = (char)(body >> 24);
	frame[1] = (char)(body >> 16);
	frame[2] = (char)(body >> 8);
	frame[3] = (char)body;

	/* ADD and CHECK look into the Pod's netns; DEL never does. */
	int netns = -1;
	const char *nspath = getenv("CNI_NETNS");
	if (strcmp(cmd, "DEL") != 0 && nspath && *nspath) {
		netns = open(nspath, O_RDONLY | O_CLOEXEC);
		if (netns < 0)
			fallback(); /* the Go plugin reports the error in its words */
	}

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, sizeof(path)); /* NUL-terminated by front_socket */
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		fallback();

	struct iovec iov = {.iov_base = frame, .iov_len = n};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (netns >= 0) {
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &netns, sizeof(int));
	}
	/* The fd rides on the first sendmsg; the rest (rarely any) follows. */
	ssize_t w;
	while ((w = sendmsg(s, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (w <= 0)
		fallback();
	for (size_t off = (size_t)w; off < n; off += (size_t)w) {
		while ((w = send(s, frame + off, n - off, MSG_NOSIGNAL)) < 0 && errno == EINTR)
			;
		if (w <= 0)
			fallback();
	}

	/* Sent (a Unix socket never blocks on one small frame); only the wait
	 * for the reply is bounded. */
	struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	/* The reply, after the request (which fallback may still need): length,
	 * magic, status, exit code, stdout bytes. Usually one read returns all
	 * of it. */
	char *rep = frame + n;
	size_t repcap = sizeof(frame) - n; /* >= REQUEST_MAX: a whole reply fits */
	size_t got = 0;
	int code = 0, done;
	const char *out = NULL;
	size_t outn = 0;
	while ((done = front_reply(rep, got, &code, &out, &outn)) < 0) {
		if (got == repcap)
			fallback();
		ssize_t r = read(s, rep + got, repcap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fallback();
		got += (size_t)r;
	}
	if (!done)
		fallback();
	while (outn > 0) {
		ssize_t k = write(1, out, outn);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			_exit(1);
		out += k;
		outn -= (size_t)k;
	}
	_exit(code);
}
