/* Time-stamp queries over HTTP, for the core; see tsafetch.h. */
#include "signer/listener/tsafetch.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#define TSA_MAX_ADDRS 8

struct tsa_fetcher {
	char *url;
	long timeout_ms;
	struct curl_slist *resolve; /* HOST:PORT:ADDR,... for CURLOPT_RESOLVE */
};

void tsa_fetcher_free(struct tsa_fetcher *t)
{
	if (t == NULL)
		return;
	curl_slist_free_all(t->resolve);
	free(t->url);
	free(t);
}

int tsa_fetcher_new(const struct config *cfg, struct tsa_fetcher **out, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	struct tsa_fetcher *t;
	char entry[CFG_MAX_TSA_URL + TSA_MAX_ADDRS * (INET6_ADDRSTRLEN + 3) + 16];
	char addr[INET6_ADDRSTRLEN];
	size_t used;
	int rc, n = 0;

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL || (t->url = strdup(cfg->tsa_url)) == NULL) {
		tsa_fetcher_free(t);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	t->timeout_ms = (long)cfg->tsa_timeout * 1000;
	if ((rc = getaddrinfo(cfg->tsa_host, NULL, &hints, &res)) != 0) {
		snprintf(err, errlen, "tsa.url: cannot resolve %s: %s", cfg->tsa_host,
		         gai_strerror(rc));
		tsa_fetcher_free(t);
		return -1;
	}
	/* IPv6 addresses in brackets, as CURLOPT_RESOLVE takes them. */
	if (strchr(cfg->tsa_host, ':') != NULL)
		used = (size_t)snprintf(entry, sizeof(entry), "[%s]:%u:", cfg->tsa_host,
		                        cfg->tsa_port);
	else
		used =
		    (size_t)snprintf(entry, sizeof(entry), "%s:%u:", cfg->tsa_host, cfg->tsa_port);
	for (ai = res; ai != NULL && n < TSA_MAX_ADDRS; ai = ai->ai_next) {
		const void *a =
		    ai->ai_family == AF_INET
		        ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
		        : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    inet_ntop(ai->ai_family, a, addr, sizeof(addr)) == NULL)
			continue;
		if (ai->ai_family == AF_INET6)
			used += (size_t)snprintf(entry + used, sizeof(entry) - used, "%s[%s]",
			                         n > 0 ? "," : "", addr);
		else
			used += (size_t)snprintf(entry + used, sizeof(entry) - used, "%s%s",
			                         n > 0 ? "," : "", addr);
		n++;
	}
	freeaddrinfo(res);
	if (n == 0 || used >= sizeof(entry) ||
	    (t->resolve = curl_slist_append(NULL, entry)) == NULL) {
		snprintf(err, errlen, "tsa.url: no usable address for %s", cfg->tsa_host);
		tsa_fetcher_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

struct body {
	uint8_t *p;
	size_t len;
	int too_large;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;

	if (n > WIRE_MAX_TSA_REPLY - b->len) {
		b->too_large = 1;
		return 0; /* stops the transfer */
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return n;
}

void tsa_fetch(struct tsa_fetcher *t, unsigned wait_ms, const uint8_t *query, size_t qlen,
               struct wire_tsa_reply *reply, uint8_t **out)
{
	struct curl_slist *hdrs = NULL;
	struct body b = {0};
	CURL *c = NULL;
	CURLcode rc;
	long status = 0;
	char *ctype = NULL;

	memset(reply, 0, sizeof(*reply));
	*out = NULL;
	reply->outcome = WIRE_TSA_UNREACHABLE;
	if (t == NULL) {
		reply->outcome = WIRE_TSA_NOT_CONFIGURED;
		return;
	}
	if ((b.p = malloc(WIRE_MAX_TSA_REPLY)) == NULL || (c = curl_easy_init()) == NULL ||
	    (hdrs = curl_slist_append(hdrs, "Content-Type: application/timestamp-query")) == NULL ||
	    (hdrs = curl_slist_append(hdrs, "Accept: application/timestamp-reply")) == NULL ||
	    (hdrs = curl_slist_append(hdrs, "Expect:")) == NULL)
		goto out;
	/* The URL as configured, its host's addresses from start-up, HTTP only, nothing from
	 * the environment (proxies, .netrc), no redirects, no signals. */
	if (curl_easy_setopt(c, CURLOPT_URL, t->url) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_RESOLVE, t->resolve) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
	                     wait_ms < t->timeout_ms ? (long)wait_ms : t->timeout_ms) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)query) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)qlen) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b) != CURLE_OK)
		goto out;
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 100 && status <= 599)
		reply->http_status = (unsigned)status;
	if (b.too_large) {
		reply->outcome = WIRE_TSA_TOO_LARGE;
		goto out;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		reply->outcome = WIRE_TSA_TIMEOUT;
		goto out;
	}
	if (rc != CURLE_OK)
		goto out; /* unreachable */
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
	if (status != 200 || ctype == NULL ||
	    strncasecmp(ctype, "application/timestamp-reply", 27) != 0 ||
	    (ctype[27] != '\0' && ctype[27] != ';') || b.len == 0) {
		reply->outcome = WIRE_TSA_HTTP_ERROR;
		goto out;
	}
	reply->outcome = WIRE_TSA_OK;
	reply->http_status = 200;
	reply->body = b.p;
	reply->len = b.len;
	*out = b.p;
	b.p = NULL;
out:
	free(b.p);
	curl_slist_free_all(hdrs);
	if (c != NULL)
		curl_easy_cleanup(c);
}
