/*
 * front.h: the only parsing the C front does, kept apart from sluice.c so
 * that plugin/shim/fuzz can fuzz exactly this code.
 *
 * The front reads two things: which socket to dial (front_socket), and the
 * helper's reply (front_reply). Neither has to be exact about the network
 * configuration: the helper parses the configuration itself, and answers
 * "fall back" when its top-level "socket" is not the socket the helper
 * listens on (cniplugin.InProcess). A socket the front picks wrongly (a
 * nested "socket" key, say) thus costs a fallback to sluice-full, never a
 * call run by the wrong helper.
 *
 * Both functions read only within the n bytes they are given.
 */
#ifndef SLUICE_FRONT_H
#define SLUICE_FRONT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* pkg/cniproto's DefaultSocketPath, MaxMessageSize, exec magic and reply
 * statuses: integration/binaries TestFrontConstantsMatchTheProtocol fails
 * when one differs. */
#define DEFAULT_SOCKET "/var/run/sluice/cni.sock"
#define MAX_MESSAGE (64 * 1024)
#define EXEC_MAGIC "\0SX1"
#define EXEC_MAGIC_LEN 4
#define REPLY_DONE 0
#define REPLY_FALLBACK 1

static int front_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * front_socket copies into out (cap bytes) the socket that the first
 * "socket" key of the configuration names, or DEFAULT_SOCKET when no key
 * "socket" appears. It returns 0 (fall back) when the value is not a plain
 * ASCII string: empty, escaped, with a control character (JSON has none
 * unescaped) or a byte Go's decoder might replace, unterminated or too
 * long.
 */
static int front_socket(const char *p, size_t n, char *out, size_t cap)
{
	static const char key[] = "\"socket\"";
	const size_t kl = sizeof(key) - 1;
	size_t j = 0;
	for (size_t i = 0;; i++) {
		if (n < kl || i > n - kl) {
			size_t l = sizeof(DEFAULT_SOCKET) - 1;
			if (l >= cap)
				return 0;
			memcpy(out, DEFAULT_SOCKET, l + 1);
			return 1;
		}
		if (memcmp(p + i, key, kl) != 0)
			continue;
		for (j = i + kl; j < n && front_space(p[j]); j++)
			;
		if (j < n && p[j] == ':')
			break; /* a key, not a string value "socket" */
	}
	for (j++; j < n && front_space(p[j]); j++)
		;
	if (j >= n || p[j] != '"')
		return 0; /* not a string: let the Go plugin say so */
	size_t v = ++j;
	while (j < n && p[j] != '"' && p[j] != '\\' && (unsigned char)p[j] >= 0x20 && (unsigned char)p[j] < 0x7f)
		j++;
	if (j >= n || p[j] != '"' || j == v || j - v >= cap)
		return 0;
	memcpy(out, p + v, j - v);
	out[j - v] = 0;
	return 1;
}

/*
 * front_reply reads a reply frame (length, magic, status, exit code,
 * stdout) from the got bytes at rep. It returns -1 while the frame is
 * incomplete, 0 to fall back (a malformed frame, or the helper said so),
 * and 1 with *code, *out and *outn set when the helper ran the call.
 */
static int front_reply(const char *rep, size_t got, int *code, const char **out, size_t *outn)
{
	if (got < 4)
		return -1;
	const unsigned char *h = (const unsigned char *)rep;
	uint32_t rl = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (rl < EXEC_MAGIC_LEN + 2 || rl > MAX_MESSAGE)
		return 0;
	if (got < 4 + (size_t)rl)
		return -1;
	const char *b = rep + 4;
	if (memcmp(b, EXEC_MAGIC, EXEC_MAGIC_LEN) != 0 || b[EXEC_MAGIC_LEN] != REPLY_DONE)
		return 0;
	*code = (unsigned char)b[EXEC_MAGIC_LEN + 1];
	*out = b + EXEC_MAGIC_LEN + 2;
	*outn = rl - EXEC_MAGIC_LEN - 2;
	return 1;
}

#endif
