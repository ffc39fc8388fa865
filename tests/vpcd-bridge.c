/* vpcd-bridge: an emulated CAC smartcard (libcacard, keys in an NSS database) plugged into the
 * vsmartcard virtual reader (vpcd, a pcscd driver) over its TCP socket.
 *
 * Tests only. Starting the bridge inserts the card; killing it (or closing the socket) removes
 * it. vpcd protocol: each message is a 2-byte big-endian length and the payload. A 1-byte
 * payload is a control (0 power off, 1 power on, 2 reset, 4 send the ATR back); anything else is
 * a command APDU answered with the response APDU.
 *
 * usage: vpcd-bridge --db DIR [--host 127.0.0.1] [--port 35963] [--certs cert1,cert2,cert3]
 * The NSS database password is the card PIN; libcacard asks NSS for it on VERIFY.
 *
 * SIGUSR1: the card holds the next signature APDU (CAC SIGN/DECRYPT, INS 0x42) for a second
 * before answering it, and says so on stderr first, so that a test can pull the card while a
 * signature is in it. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libcacard.h>

#define CTRL_OFF 0
#define CTRL_ON 1
#define CTRL_RESET 2
#define CTRL_ATR 4

/* Extended APDUs: 65535 + header; responses up to 64 KiB + status word. */
#define MAX_MSG 65535
#define MAX_ATR 64
/* CAC SIGN/DECRYPT, and how long SIGUSR1 makes the card sit on the next one. */
#define INS_SIGN 0x42
#define HOLD_MS 1000

static int opt_verbose;
static volatile sig_atomic_t hold_next;

static void on_usr1(int sig)
{
	(void)sig;
	hold_next = 1;
}

/* The APDU in is a signature and SIGUSR1 asked for one to be held: hold it. */
static void maybe_hold(const unsigned char *in, size_t len)
{
	struct timespec ts = {HOLD_MS / 1000, (HOLD_MS % 1000) * 1000000L};

	if (!hold_next || len < 4 || in[1] != INS_SIGN)
		return;
	hold_next = 0;
	fprintf(stderr, "vpcd-bridge: holding a signature APDU for %d ms\n", HOLD_MS);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vpcd-bridge: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static int read_full(int fd, unsigned char *buf, size_t n)
{
	size_t got = 0;
	ssize_t k;
	int one = 1;

	while (got < n) {
		/* Linux clears TCP_QUICKACK after a while: without re-arming it, the ACK of every
		 * response waits for the delayed-ACK timer and each APDU costs about 40 ms. */
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
		k = read(fd, buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

static int write_full(int fd, const unsigned char *buf, size_t n)
{
	size_t put = 0;
	ssize_t k;

	while (put < n) {
		k = write(fd, buf + put, n - put);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		put += (size_t)k;
	}
	return 0;
}

static int send_msg(int fd, const unsigned char *buf, size_t n)
{
	unsigned char hdr[2];

	if (n > MAX_MSG)
		return -1;
	hdr[0] = (unsigned char)(n >> 8);
	hdr[1] = (unsigned char)(n & 0xff);
	if (write_full(fd, hdr, 2) != 0)
		return -1;
	return write_full(fd, buf, n);
}

static int connect_vpcd(const char *host, const char *port)
{
	struct addrinfo hints, *res = NULL, *ai;
	int fd = -1, one = 1, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	e = getaddrinfo(host, port, &hints, &res);
	if (e != 0)
		die("cannot resolve vpcd address: %s", gai_strerror(e));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		die("cannot connect to vpcd: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static VReader *first_reader(void)
{
	VReaderList *list;
	VReaderListEntry *ent;
	VReader *r = NULL;

	list = vreader_get_reader_list();
	if (list == NULL)
		return NULL;
	ent = vreader_list_get_first(list);
	if (ent != NULL)
		r = vreader_reference(vreader_list_get_reader(ent));
	vreader_list_delete(list);
	return r;
}

static int serve(int fd, VReader *reader, const unsigned char *atr, int atrlen)
{
	static unsigned char in[MAX_MSG], out[MAX_MSG];
	unsigned char hdr[2], scratch[MAX_ATR];
	size_t len;
	int outlen, n;
	VReaderStatus st;

	for (;;) {
		if (read_full(fd, hdr, 2) != 0)
			return 0; /* vpcd went away: nothing more to do */
		len = ((size_t)hdr[0] << 8) | hdr[1];
		if (len == 0 || read_full(fd, in, len) != 0)
			return 0;
		if (len == 1) {
			/* Power on and reset reset the card (and its login); the ATR request does
			 * not: vpcd sends it to poll for presence, every few hundred ms. */
			switch (in[0]) {
			case CTRL_OFF:
				vreader_power_off(reader);
				break;
			case CTRL_ON:
				n = sizeof(scratch);
				vreader_power_on(reader, scratch, &n);
				break;
			case CTRL_RESET:
				vreader_power_off(reader);
				n = sizeof(scratch);
				vreader_power_on(reader, scratch, &n);
				break;
			case CTRL_ATR:
				if (send_msg(fd, atr, (size_t)atrlen) != 0)
					return -1;
				break;
			default:
				fprintf(stderr, "vpcd-bridge: unknown control %u ignored\n", in[0]);
				break;
			}
			if (opt_verbose)
				fprintf(stderr, "vpcd-bridge: control %u\n", in[0]);
			continue;
		}
		maybe_hold(in, len);
		outlen = sizeof(out);
		st = vreader_xfr_bytes(reader, in, (int)len, out, &outlen);
		if (st != VREADER_OK || outlen < 2 || outlen > MAX_MSG) {
			/* No card answer: a bare "no precise diagnosis" status keeps vpcd in step.
			 */
			out[0] = 0x6f;
			out[1] = 0x00;
			outlen = 2;
		}
		if (opt_verbose)
			fprintf(stderr, "vpcd-bridge: apdu %zu bytes -> %d bytes %02x%02x\n", len,
			        outlen, out[outlen - 2], out[outlen - 1]);
		if (send_msg(fd, out, (size_t)outlen) != 0)
			return -1;
	}
}

int main(int argc, char **argv)
{
	const char *db = NULL, *host = "127.0.0.1", *port = "35963";
	const char *certs = "cert1,cert2,cert3";
	char opts[4096];
	VCardEmulOptions *eo;
	VReader *reader;
	unsigned char atr[MAX_ATR];
	int i, fd, n, atrlen;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--db") == 0 && i + 1 < argc)
			db = argv[++i];
		else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
			host = argv[++i];
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
			port = argv[++i];
		else if (strcmp(argv[i], "--certs") == 0 && i + 1 < argc)
			certs = argv[++i];
		else if (strcmp(argv[i], "-v") == 0)
			opt_verbose = 1;
		else
			die("usage: vpcd-bridge --db DIR [--host H] [--port P] [--certs a,b,c] "
			    "[-v]");
	}
	if (db == NULL)
		die("--db DIR is required");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, on_usr1);

	n = snprintf(opts, sizeof(opts), "db=\"sql:%s\" use_hw=no soft=(,VirtCAC,CAC,,%s)", db,
	             certs);
	if (n < 0 || (size_t)n >= sizeof(opts))
		die("options too long");
	eo = vcard_emul_options(opts);
	if (eo == NULL)
		die("bad libcacard options: %s", opts);
	if (vcard_emul_init(eo) != VCARD_EMUL_OK)
		die("libcacard could not start on the NSS database %s", db);
	reader = first_reader();
	if (reader == NULL)
		die("libcacard made no virtual reader");
	if (vreader_card_is_present(reader) != VREADER_OK)
		die("no emulated card in the virtual reader (are %s in the database?)", certs);

	/* The ATR once, for vpcd's presence polls. */
	atrlen = sizeof(atr);
	if (vreader_power_on(reader, atr, &atrlen) != VREADER_OK || atrlen <= 0 || atrlen > MAX_ATR)
		die("the emulated card gave no ATR");

	fd = connect_vpcd(host, port);
	fprintf(stderr, "vpcd-bridge: card inserted (%s:%s)\n", host, port);
	n = serve(fd, reader, atr, atrlen);
	close(fd);
	vreader_free(reader);
	vcard_emul_finalize();
	return n == 0 ? 0 : 1;
}
