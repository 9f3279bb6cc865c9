/*
 * sluice: the fast front of the chained CNI plugin.
 *
 * The container runtime execs this binary for every Pod. On this kind of
 * machine a bare exec of the Go plugin takes 13.4 ms (median, BENCHMARKS.md
 * cni_go_plugin_bare_exec_median_ms: its runtime touches ~200 pages, and a
 * page fault costs ~30 us in a VM), which is more than the whole
 * budget sluice may add to a Pod's ADD. So the runtime-facing binary is this
 * small static C program, and the plugin's logic runs, unchanged, in the
 * helper that is already up:
 *
 *   1. read stdin (the network configuration) and the CNI_* environment;
 *   2. find the helper socket: the top-level "socket" field of the
 *      configuration, or /var/run/sluice/cni.sock;
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
 * The shim never interprets the configuration beyond the socket path and
 * never writes partial output: stdout is either the helper's complete answer
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

#define DEFAULT_SOCKET "/var/run/sluice/cni.sock"
#define FULL_NAME "sluice-full"
/* pkg/cniproto's DefaultSocketPath, MaxMessageSize, exec magic, reply
 * statuses and ExecEnv: integration/binaries TestFrontConstantsMatchTheProtocol
 * fails when one differs. Built with the flags in plugin/shim/cflags. */
#define MAX_MESSAGE (64 * 1024)
#define EXEC_MAGIC "\0SX1"
#define EXEC_MAGIC_LEN 4
#define REPLY_DONE 0
#define REPLY_FALLBACK 1
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

/* copy_str copies src into out (cap bytes); 0 when it does not fit. Not
 * snprintf: printf's code would be two more pages to fault in. */
static int copy_str(char *out, size_t cap, const char *src)
{
	size_t l = strlen(src);
	if (l >= cap)
		return 0;
	memcpy(out, src, l + 1);
	return 1;
}

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

/* --- A JSON skipper, just enough to find the top-level "socket" string. --- */

static const char *ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at '"'; returns past the closing quote, or NULL. *esc tells if any
 * escape appeared. */
static const char *str(const char *p, const char *e, int *esc)
{
	*esc = 0;
	for (p++; p < e; p++) {
		if (*p == '\\') {
			*esc = 1;
			p++;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

static const char *value(const char *p, const char *e, int depth)
{
	int esc;
	p = ws(p, e);
	if (p >= e || depth > 64)
		return NULL;
	if (*p == '"')
		return str(p, e, &esc);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		p = ws(p + 1, e);
		if (p < e && *p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = ws(p, e);
				if (p >= e || *p != '"' || !(p = str(p, e, &esc)))
					return NULL;
				p = ws(p, e);
				if (p >= e || *p++ != ':')
					return NULL;
			}
			if (!(p = value(p, e, depth + 1)))
				return NULL;
			p = ws(p, e);
			if (p >= e)
				return NULL;
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	/* number, true, false, null */
	const char *s = p;
	while (p < e && (strchr("+-.eE", *p) || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')))
		p++;
	return p > s ? p : NULL;
}

/* socket_path finds the top-level "socket" string (the last one, as Go's
 * decoder does). 1: found or defaulted; 0: not plain enough - fall back. */
static int socket_path(char *out, size_t cap)
{
	const char *p = stdin_buf, *e = stdin_buf + stdin_len;
	int esc, found = 0;
	p = ws(p, e);
	if (p >= e || *p++ != '{')
		return 0;
	p = ws(p, e);
	if (p < e && *p == '}')
		goto dflt;
	for (;;) {
		p = ws(p, e);
		if (p >= e || *p != '"')
			return 0;
		const char *k = p + 1, *ke = str(p, e, &esc);
		if (!ke)
			return 0;
		int is_socket = !esc && ke - 1 - k == 6 && memcmp(k, "socket", 6) == 0;
		p = ws(ke, e);
		if (p >= e || *p++ != ':')
			return 0;
		p = ws(p, e);
		if (is_socket) {
			if (p >= e || *p != '"')
				return 0; /* not a string: let the Go plugin say so */
			const char *v = p + 1, *ve = str(p, e, &esc);
			if (!ve || esc || (size_t)(ve - 1 - v) >= cap)
				return 0;
			memcpy(out, v, (size_t)(ve - 1 - v));
			out[ve - 1 - v] = 0;
			found = 1;
			p = ve;
		} else if (!(p = value(p, e, 1))) {
			return 0;
		}
		p = ws(p, e);
		if (p >= e)
			return 0;
		if (*p == '}')
			break;
		if (*p++ != ',')
			return 0;
	}
	if (found)
		return out[0] != 0 ? 1 : 0; /* "" means default in Go; rare, let it decide */
dflt:
	return copy_str(out, cap, DEFAULT_SOCKET);
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
	if (!socket_path(path, sizeof(path)))
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
	memcpy(sa.sun_path, path, sizeof(path)); /* NUL-terminated by socket_path */
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
	size_t repcap = sizeof(frame) - n; /* >= REQUEST_MAX */
	size_t got = 0;
	uint32_t rl = 0;
	for (;;) {
		ssize_t r = read(s, rep + got, repcap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fallback();
		got += (size_t)r;
		if (got < 4)
			continue;
		unsigned char *h = (unsigned char *)rep;
		rl = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
		if (rl < EXEC_MAGIC_LEN + 2 || rl > MAX_MESSAGE)
			fallback();
		if (got >= 4 + (size_t)rl)
			break;
	}
	rep += 4;
	if (memcmp(rep, EXEC_MAGIC, EXEC_MAGIC_LEN) != 0)
		fallback();
	if (rep[EXEC_MAGIC_LEN] != REPLY_DONE)
		fallback();
	int code = (unsigned char)rep[EXEC_MAGIC_LEN + 1];
	const char *out = rep + EXEC_MAGIC_LEN + 2;
	size_t outn = rl - EXEC_MAGIC_LEN - 2;
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
