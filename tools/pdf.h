/* The PDF side of iamsign sign-pdf and verify-pdf, on PoDoFo (a maintained PDF library;
 * C++, behind this C interface): a signature field added by an incremental update, its
 * byte range handed out to be signed, the CMS put into the reserved /Contents; and the
 * signatures of a PDF listed for checking. Nothing here knows CMS or the daemon. Every
 * function returns 0, or -1 with err set. */
#ifndef IAMSIGN_TOOLS_PDF_H
#define IAMSIGN_TOOLS_PDF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PDF_MAX_SIZE (64u << 20) /* largest PDF read */
#define PDF_SIG_RESERVE 24576    /* bytes of CMS the /Contents placeholder holds */

/* Sign the bytes of the signed byte range (data, len): *cms (malloc'ed) and *cmslen, at most
 * PDF_SIG_RESERVE bytes. 0, or -1 (the callback has said why). */
typedef int (*pdf_sign_fn)(void *arg, const unsigned char *data, size_t len, unsigned char **cms,
                           size_t *cmslen);

/* Write to out (not in itself) in plus an incremental update with a new invisible signature
 * field on page 1: /FT /Sig, a signature dictionary /Filter /Adobe.PPKLite /SubFilter
 * /ETSI.CAdES.detached, /M now, /Reason and /Name when given, the ByteRange and /Contents
 * filled in from sign. in may already be signed: earlier signatures stay valid. */
int pdf_sign(const char *in, const char *out, const char *reason, const char *name,
             pdf_sign_fn sign, void *arg, char *err, size_t errlen);

/* One signature dictionary of a PDF: its field's name, /SubFilter and /ByteRange. The CMS is
 * read by the caller from the file's bytes in the byte range's gap, which it checks is the
 * /Contents hex string. */
struct pdf_sig {
	char field[128];
	char subfilter[64];
	long long range[4];
	int nrange; /* entries in /ByteRange (4 when well formed) */
};

/* Every signature dictionary in path, in file order of their byte ranges' ends. *sigs is
 * malloc'ed (pdf_sigs_free). */
int pdf_signatures(const char *path, struct pdf_sig **sigs, size_t *n, char *err, size_t errlen);
void pdf_sigs_free(struct pdf_sig *sigs, size_t n);

#ifdef __cplusplus
}
#endif

#endif
