/* A fault-injecting PKCS#11 module for the token-fault tests (tests/integration/
 * test_token_faults.sh), in the spirit of p11-kit's common/mock.c: deterministic behaviour that
 * a test scripts, here on top of a real token so that signatures are real.
 *
 * Every call is forwarded to SoftHSM (IAMSIGN_MOCK_MODULE, default
 * /usr/lib/softhsm/libsofthsm2.so), except when the control file says otherwise. The control
 * file (path in IAMSIGN_MOCK_CONTROL; absent or empty: no faults) holds lines
 *
 *     # comment
 *     C_Sign=CKR_DEVICE_REMOVED        every C_Sign fails with that CK_RV (or 0x... in hex)
 *     C_Sign=CKR_DEVICE_ERROR*3        the next 3 C_Sign calls fail, later ones pass through
 *     C_Sign=hang:5                    C_Sign sleeps 5 s (fractions allowed), then forwards
 *     C_Sign=hang:5:CKR_DEVICE_ERROR   sleeps, then fails
 *     C_Login=CKR_PIN_INCORRECT        a login that the token refuses
 *     C_CloseAllSessions=CKR_OK        answered CKR_OK without forwarding: the sessions stay
 *                                      open on the token (and in sessions.open), as OpenSC
 *                                      0.23 leaves every other one
 *
 * for any function in MOCK_FUNCS below, and
 *
 *     sessions=4                       at most 4 sessions open at once: C_OpenSession answers
 *                                      CKR_SESSION_COUNT beyond (CK_TOKEN_INFO says no limit)
 *     sessions=4:reported              the same, and CK_TOKEN_INFO says 4 (ulMaxSessionCount
 *                                      and ulMaxRwSessionCount)
 *
 * The file is looked at (one stat) on every call and
 * parsed again whenever it changed (inode, size or times): write it by rename so a change is
 * never missed and never read half-written. Parsing again restarts the "*N" counts.
 *
 * After every call the stats file (IAMSIGN_MOCK_STATS, default: the control path + ".stats")
 * is replaced (by rename) with lines "C_Login.calls=4" and "C_Login.faults=1" for every
 * function called so far: calls count every call, faults those answered from the control
 * file; and "sessions.open=2", "sessions.peak=5" (most open at once since the module was
 * loaded) and "sessions.refused=1" (C_OpenSession answered CKR_SESSION_COUNT). Sessions are
 * counted as opened and closed through the mock (C_CloseAllSessions and C_Finalize close them
 * all). Malformed control lines are reported on stderr once per parse and ignored. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define MOCK_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define MOCK_MAX_CONTROL 4096
#define MOCK_MAX_PATH 4096

/* X(name, parameter list, argument list) for every function that can be scripted. */
#define MOCK_FUNCS(X)                                                                              \
	X(C_Initialize, (CK_VOID_PTR a), (a))                                                      \
	X(C_Finalize, (CK_VOID_PTR a), (a))                                                        \
	X(C_GetInfo, (CK_INFO_PTR a), (a))                                                         \
	X(C_GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c))                \
	X(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))                               \
	X(C_GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b))                             \
	X(C_GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c))  \
	X(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c),        \
	  (a, b, c))                                                                               \
	X(C_OpenSession,                                                                           \
	  (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d, CK_SESSION_HANDLE_PTR e),         \
	  (a, b, c, d, e))                                                                         \
	X(C_CloseSession, (CK_SESSION_HANDLE a), (a))                                              \
	X(C_CloseAllSessions, (CK_SLOT_ID a), (a))                                                 \
	X(C_GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))                  \
	X(C_Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d),           \
	  (a, b, c, d))                                                                            \
	X(C_Logout, (CK_SESSION_HANDLE a), (a))                                                    \
	X(C_GetAttributeValue,                                                                     \
	  (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d)) \
	X(C_FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c))     \
	X(C_FindObjects,                                                                           \
	  (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, CK_ULONG_PTR d), (a, b, c, d)) \
	X(C_FindObjectsFinal, (CK_SESSION_HANDLE a), (a))                                          \
	X(C_SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))    \
	X(C_Sign, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e))                                                                         \
	X(C_SignUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))               \
	X(C_SignFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))

#define MOCK_ENUM(name, params, args) IDX_##name,
enum { MOCK_FUNCS(MOCK_ENUM) MOCK_NFUNCS };
#define MOCK_NAME(name, params, args) #name,
static const char *const func_names[MOCK_NFUNCS] = {MOCK_FUNCS(MOCK_NAME)};

/* What the control file says about one function. */
struct rule {
	int active;
	int fail; /* return rv instead of forwarding */
	CK_RV rv;
	long hang_ms;   /* sleep first */
	long remaining; /* calls still to fault; -1: all of them */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *real;
static void *real_dl;
static CK_FUNCTION_LIST list;
static int list_ready;

static char control_path[MOCK_MAX_PATH];
static char stats_path[MOCK_MAX_PATH];
static struct stat control_seen; /* identity of the file the rules came from */
static int control_had;          /* 1: rules came from an existing file */
static struct rule rules[MOCK_NFUNCS];
static unsigned long n_calls[MOCK_NFUNCS];
static unsigned long n_faults[MOCK_NFUNCS];
static long sess_limit;   /* "sessions=N": 0 none */
static int sess_reported; /* ":reported" */
static long sess_open, sess_peak;
static unsigned long sess_refused;

static const struct {
	const char *name;
	CK_RV rv;
} rv_names[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_PIN_LOCKED", CKR_PIN_LOCKED},
    {"CKR_PIN_EXPIRED", CKR_PIN_EXPIRED},
    {"CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
    {"CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE},
    {"CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
};

static int parse_rv(const char *s, CK_RV *out)
{
	char *end;
	size_t i;

	for (i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++) {
		if (strcmp(s, rv_names[i].name) == 0) {
			*out = rv_names[i].rv;
			return 0;
		}
	}
	if (strncmp(s, "0x", 2) == 0) {
		errno = 0;
		*out = strtoul(s + 2, &end, 16);
		if (errno == 0 && end != s + 2 && *end == '\0')
			return 0;
	}
	return -1;
}

/* "ACTION[*N]" into r; -1 if malformed. */
static int parse_action(char *v, struct rule *r)
{
	char *star, *end, *rest;
	double secs;

	memset(r, 0, sizeof(*r));
	r->remaining = -1;
	if ((star = strchr(v, '*')) != NULL) {
		*star = '\0';
		errno = 0;
		r->remaining = strtol(star + 1, &end, 10);
		if (errno != 0 || end == star + 1 || *end != '\0' || r->remaining < 1)
			return -1;
	}
	if (strncmp(v, "hang:", 5) == 0) {
		errno = 0;
		secs = strtod(v + 5, &rest);
		if (errno != 0 || rest == v + 5 || secs < 0 || secs > 3600)
			return -1;
		r->hang_ms = (long)(secs * 1000.0);
		if (*rest == ':') {
			if (parse_rv(rest + 1, &r->rv) != 0)
				return -1;
			r->fail = 1;
		} else if (*rest != '\0') {
			return -1;
		}
	} else {
		if (parse_rv(v, &r->rv) != 0)
			return -1;
		r->fail = 1;
	}
	r->active = 1;
	return 0;
}

/* "N" or "N:reported" into sess_limit and sess_reported; -1 if malformed. */
static int parse_sessions(const char *v)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || n < 1 || n > 1000000)
		return -1;
	if (strcmp(end, ":reported") == 0)
		sess_reported = 1;
	else if (*end != '\0')
		return -1;
	sess_limit = n;
	return 0;
}

/* Caller holds mu. Parse the control file again if it changed since last time. */
static void control_refresh(void)
{
	struct stat st;
	char buf[MOCK_MAX_CONTROL + 1], *line, *save = NULL, *eq;
	FILE *f;
	size_t n, i;
	struct rule r;

	if (control_path[0] == '\0')
		return;
	if (stat(control_path, &st) != 0) {
		if (control_had) {
			memset(rules, 0, sizeof(rules));
			control_had = 0;
		}
		return;
	}
	if (control_had && st.st_ino == control_seen.st_ino && st.st_size == control_seen.st_size &&
	    st.st_mtim.tv_sec == control_seen.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == control_seen.st_mtim.tv_nsec &&
	    st.st_ctim.tv_sec == control_seen.st_ctim.tv_sec &&
	    st.st_ctim.tv_nsec == control_seen.st_ctim.tv_nsec)
		return;
	memset(rules, 0, sizeof(rules));
	sess_limit = 0;
	sess_reported = 0;
	control_seen = st;
	control_had = 1;
	if ((f = fopen(control_path, "re")) == NULL)
		return;
	n = fread(buf, 1, MOCK_MAX_CONTROL, f);
	fclose(f);
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		line[strcspn(line, " \t\r#")] = '\0';
		if (line[0] == '\0')
			continue;
		if ((eq = strchr(line, '=')) == NULL)
			goto bad;
		*eq = '\0';
		if (strcmp(line, "sessions") == 0) {
			if (parse_sessions(eq + 1) != 0) {
				*eq = '=';
				goto bad;
			}
			continue;
		}
		for (i = 0; i < MOCK_NFUNCS; i++)
			if (strcmp(line, func_names[i]) == 0)
				break;
		if (i == MOCK_NFUNCS || parse_action(eq + 1, &r) != 0) {
			*eq = '=';
			goto bad;
		}
		rules[i] = r;
		continue;
	bad:
		fprintf(stderr, "mock-pkcs11: %s: ignoring \"%s\"\n", control_path, line);
	}
}

/* Caller holds mu. */
static void stats_write(void)
{
	char tmp[MOCK_MAX_PATH + 8];
	FILE *f;
	size_t i;

	if (stats_path[0] == '\0')
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
	if ((f = fopen(tmp, "we")) == NULL)
		return;
	for (i = 0; i < MOCK_NFUNCS; i++)
		if (n_calls[i] > 0)
			fprintf(f, "%s.calls=%lu\n%s.faults=%lu\n", func_names[i], n_calls[i],
			        func_names[i], n_faults[i]);
	fprintf(f, "sessions.open=%ld\nsessions.peak=%ld\nsessions.refused=%lu\n", sess_open,
	        sess_peak, sess_refused);
	if (fclose(f) == 0)
		rename(tmp, stats_path);
}

/* Before forwarding call idx: 1 with *rv set when the call is to fail, else 0 (possibly after
 * hanging as told). */
static int fault_before(int idx, CK_RV *rv)
{
	struct rule r = {0};
	struct timespec ts;

	pthread_mutex_lock(&mu);
	control_refresh();
	n_calls[idx]++;
	if (rules[idx].active) {
		r = rules[idx];
		n_faults[idx]++;
		if (rules[idx].remaining > 0 && --rules[idx].remaining == 0)
			rules[idx].active = 0;
	}
	stats_write();
	pthread_mutex_unlock(&mu);
	if (r.hang_ms > 0) {
		ts.tv_sec = r.hang_ms / 1000;
		ts.tv_nsec = (r.hang_ms % 1000) * 1000000L;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	*rv = r.rv;
	return r.fail;
}

#define MOCK_WRAP(name, params, args)                                                              \
	static CK_RV mock_##name params                                                            \
	{                                                                                          \
		CK_RV rv;                                                                          \
		if (fault_before(IDX_##name, &rv))                                                 \
			return rv;                                                                 \
		return real->name args;                                                            \
	}
MOCK_FUNCS(MOCK_WRAP)

/* The session count, around the scripted calls. A session is counted from before it is opened
 * (so that racing threads never exceed the limit) and uncounted if the open fails. */
static CK_RV lim_C_OpenSession(CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d,
                               CK_SESSION_HANDLE_PTR e)
{
	CK_RV rv;

	pthread_mutex_lock(&mu);
	control_refresh();
	if (sess_limit > 0 && sess_open >= sess_limit) {
		n_calls[IDX_C_OpenSession]++;
		n_faults[IDX_C_OpenSession]++;
		sess_refused++;
		stats_write();
		pthread_mutex_unlock(&mu);
		return CKR_SESSION_COUNT;
	}
	sess_open++;
	pthread_mutex_unlock(&mu);
	rv = mock_C_OpenSession(a, b, c, d, e);
	pthread_mutex_lock(&mu);
	if (rv != CKR_OK)
		sess_open--;
	else if (sess_open > sess_peak)
		sess_peak = sess_open;
	stats_write();
	pthread_mutex_unlock(&mu);
	return rv;
}

static void sessions_closed(long n) /* n < 0: all */
{
	pthread_mutex_lock(&mu);
	sess_open = n < 0 || n > sess_open ? 0 : sess_open - n;
	stats_write();
	pthread_mutex_unlock(&mu);
}

/* A close answered from the control file (even "=CKR_OK", a module that says so and closes
 * nothing) leaves the sessions open on the token, and counted. */
static CK_RV lim_C_CloseSession(CK_SESSION_HANDLE a)
{
	CK_RV rv;

	if (fault_before(IDX_C_CloseSession, &rv))
		return rv;
	rv = real->C_CloseSession(a);
	if (rv == CKR_OK)
		sessions_closed(1);
	return rv;
}

static CK_RV lim_C_CloseAllSessions(CK_SLOT_ID a)
{
	CK_RV rv;

	if (fault_before(IDX_C_CloseAllSessions, &rv))
		return rv;
	rv = real->C_CloseAllSessions(a);
	if (rv == CKR_OK)
		sessions_closed(-1);
	return rv;
}

static CK_RV lim_C_Finalize(CK_VOID_PTR a)
{
	CK_RV rv = mock_C_Finalize(a);

	if (rv == CKR_OK)
		sessions_closed(-1);
	return rv;
}

static CK_RV lim_C_GetTokenInfo(CK_SLOT_ID a, CK_TOKEN_INFO_PTR b)
{
	CK_RV rv = mock_C_GetTokenInfo(a, b);
	long n;
	int reported;

	pthread_mutex_lock(&mu);
	n = sess_limit;
	reported = sess_reported;
	pthread_mutex_unlock(&mu);
	if (rv == CKR_OK && reported)
		b->ulMaxSessionCount = b->ulMaxRwSessionCount = (CK_ULONG)n;
	return rv;
}

/* Caller holds mu. */
static CK_RV load_real(void)
{
	const char *path = getenv("IAMSIGN_MOCK_MODULE"), *ctl, *st;
	CK_C_GetFunctionList getfl;
	CK_RV rv;

	if (list_ready)
		return CKR_OK;
	if (path == NULL || *path == '\0')
		path = MOCK_DEFAULT_MODULE;
	if ((real_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "mock-pkcs11: cannot load %s: %s\n", path, dlerror());
		return CKR_GENERAL_ERROR;
	}
	getfl = (CK_C_GetFunctionList)dlsym(real_dl, "C_GetFunctionList");
	if (getfl == NULL || (rv = getfl(&real)) != CKR_OK || real == NULL) {
		fprintf(stderr, "mock-pkcs11: %s is not a PKCS#11 module\n", path);
		dlclose(real_dl);
		real_dl = NULL;
		return CKR_GENERAL_ERROR;
	}
	ctl = getenv("IAMSIGN_MOCK_CONTROL");
	st = getenv("IAMSIGN_MOCK_STATS");
	if (ctl != NULL && strlen(ctl) < sizeof(control_path))
		snprintf(control_path, sizeof(control_path), "%s", ctl);
	if (st != NULL && strlen(st) < sizeof(stats_path))
		snprintf(stats_path, sizeof(stats_path), "%s", st);
	else if (control_path[0] != '\0' && strlen(control_path) + 7 <= sizeof(stats_path))
		snprintf(stats_path, sizeof(stats_path), "%s.stats", control_path);

	list = *real;
#define MOCK_SET(name, params, args) list.name = mock_##name;
	MOCK_FUNCS(MOCK_SET)
#undef MOCK_SET
	list.C_OpenSession = lim_C_OpenSession;
	list.C_CloseSession = lim_C_CloseSession;
	list.C_CloseAllSessions = lim_C_CloseAllSessions;
	list.C_Finalize = lim_C_Finalize;
	list.C_GetTokenInfo = lim_C_GetTokenInfo;
	list.C_GetFunctionList = C_GetFunctionList;
	list_ready = 1;
	return CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	CK_RV rv;

	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&mu);
	rv = load_real();
	pthread_mutex_unlock(&mu);
	if (rv == CKR_OK)
		*out = &list;
	return rv;
}
