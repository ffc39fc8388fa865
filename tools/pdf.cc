// PDF signing and signature listing on PoDoFo 0.9.8; see pdf.h.
#include "tools/pdf.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <podofo/podofo.h>

using namespace PoDoFo;

namespace
{

void set_err(char *err, size_t errlen, const std::string &msg)
{
	std::snprintf(err, errlen, "%s", msg.c_str());
}

std::string podofo_why(const PdfError &e)
{
	const char *m = PdfError::ErrorMessage(e.GetError());
	const char *n = PdfError::ErrorName(e.GetError());

	return std::string(n != nullptr ? n : "PoDoFo error") +
	       (m != nullptr ? std::string(": ") + m : "");
}

// A field name not yet taken: Signature1, Signature2, ...
std::string free_field_name(PdfMemDocument &doc)
{
	std::vector<std::string> taken;
	TIVecObjects it;

	for (it = doc.GetObjects().begin(); it != doc.GetObjects().end(); ++it) {
		PdfObject *o = *it;

		if (o->IsDictionary() && o->GetDictionary().HasKey("T") &&
		    o->GetDictionary().GetKey("T")->IsString())
			taken.push_back(
			    o->GetDictionary().GetKey("T")->GetString().GetStringUtf8());
	}
	for (int i = 1;; i++) {
		std::string name = "Signature" + std::to_string(i);

		if (std::find(taken.begin(), taken.end(), name) == taken.end())
			return name;
	}
}

} // namespace

// PoDoFo writes debug lines and warnings to stdout and stderr; errors come back as exceptions.
static void quiet()
{
	PdfError::EnableDebug(false);
	PdfError::EnableLogging(false);
}

extern "C" int pdf_sign(const char *in, const char *out, const char *reason, const char *name,
                        pdf_sign_fn sign, void *arg, char *err, size_t errlen)
{
	unsigned char *cms = nullptr;
	size_t cmslen = 0;

	if (std::strcmp(in, out) == 0) {
		set_err(err, errlen, "the signed PDF must be another file than the input");
		return -1;
	}
	quiet();
	try {
		PdfMemDocument doc;

		doc.Load(in, true); // for an incremental update
		if (doc.GetPageCount() < 1) {
			set_err(err, errlen,
			        std::string(in) + ": no page to put the signature field on");
			return -1;
		}
		PdfAcroForm *form =
		    doc.GetAcroForm(ePdfCreateObject, ePdfAcroFormDefaultAppearance_None);
		// SignaturesExist | AppendOnly (PDF 32000-1 12.7.2): viewers keep later changes to
		// incremental updates.
		form->GetObject()->GetDictionary().AddKey(PdfName("SigFlags"),
		                                          PdfObject(static_cast<pdf_int64>(3)));
		PdfOutputDevice dev(out, true);
		PdfSignOutputDevice signer(&dev);
		signer.SetSignatureSize(PDF_SIG_RESERVE);

		PdfSignatureField field(doc.GetPage(0), PdfRect(0, 0, 0, 0), &doc);
		field.SetFieldName(PdfString(free_field_name(doc)));
		if (reason != nullptr)
			field.SetSignatureReason(
			    PdfString(reinterpret_cast<const pdf_utf8 *>(reason)));
		field.SetSignatureDate(PdfDate());
		field.SetSignature(*signer.GetSignatureBeacon());
		PdfDictionary &sd = field.GetSignatureObject()->GetDictionary();
		sd.AddKey(PdfName("SubFilter"), PdfName("ETSI.CAdES.detached"));
		if (name != nullptr)
			sd.AddKey(PdfName("Name"),
			          PdfString(reinterpret_cast<const pdf_utf8 *>(name)));

		doc.WriteUpdate(&signer, true);
		if (!signer.HasSignaturePosition()) {
			set_err(err, errlen, "the signature placeholder was not written");
			return -1;
		}
		signer.AdjustByteRange();
		signer.Seek(0);
		std::vector<unsigned char> data;
		char buf[65536];
		size_t n;
		while ((n = signer.ReadForSignature(buf, sizeof(buf))) > 0) {
			if (data.size() + n > PDF_MAX_SIZE) {
				set_err(err, errlen, "the PDF is larger than the client accepts");
				return -1;
			}
			data.insert(data.end(), buf, buf + n);
		}
		if (sign(arg, data.data(), data.size(), &cms, &cmslen) != 0) {
			set_err(err, errlen, "not signed");
			return -1;
		}
		if (cmslen > PDF_SIG_RESERVE) {
			std::free(cms);
			set_err(err, errlen,
			        "the signature is larger than the room reserved for it");
			return -1;
		}
		signer.SetSignature(PdfData(reinterpret_cast<const char *>(cms), cmslen));
		std::free(cms);
		cms = nullptr;
		signer.Flush();
	} catch (const PdfError &e) {
		std::free(cms);
		set_err(err, errlen, std::string(in) + ": " + podofo_why(e));
		return -1;
	} catch (const std::exception &e) {
		std::free(cms);
		set_err(err, errlen, std::string(in) + ": " + e.what());
		return -1;
	}
	return 0;
}

extern "C" int pdf_signatures(const char *path, struct pdf_sig **sigs, size_t *n, char *err,
                              size_t errlen)
{
	std::vector<struct pdf_sig> found;

	*sigs = nullptr;
	*n = 0;
	quiet();
	try {
		PdfMemDocument doc;
		TIVecObjects it;

		doc.Load(path);
		for (it = doc.GetObjects().begin(); it != doc.GetObjects().end(); ++it) {
			PdfObject *o = *it;

			// A signature field: /FT /Sig with a signature dictionary /V.
			if (!o->IsDictionary() || !o->GetDictionary().HasKey("FT") ||
			    !o->GetDictionary().GetKey("FT")->IsName() ||
			    o->GetDictionary().GetKey("FT")->GetName().GetName() != "Sig" ||
			    !o->GetDictionary().HasKey("V"))
				continue;
			PdfObject *v = o->GetDictionary().GetKey("V");
			if (v->IsReference())
				v = doc.GetObjects().GetObject(v->GetReference());
			if (v == nullptr || !v->IsDictionary())
				continue;
			const PdfDictionary &d = v->GetDictionary();
			struct pdf_sig s;
			std::memset(&s, 0, sizeof(s));
			if (o->GetDictionary().HasKey("T") &&
			    o->GetDictionary().GetKey("T")->IsString())
				std::snprintf(s.field, sizeof(s.field), "%s",
				              o->GetDictionary()
				                  .GetKey("T")
				                  ->GetString()
				                  .GetStringUtf8()
				                  .c_str());
			if (d.HasKey("SubFilter") && d.GetKey("SubFilter")->IsName())
				std::snprintf(s.subfilter, sizeof(s.subfilter), "%s",
				              d.GetKey("SubFilter")->GetName().GetName().c_str());
			if (d.HasKey("ByteRange") && d.GetKey("ByteRange")->IsArray()) {
				const PdfArray &a = d.GetKey("ByteRange")->GetArray();
				s.nrange = static_cast<int>(a.size());
				for (size_t i = 0; i < a.size() && i < 4; i++)
					s.range[i] = a[i].IsNumber() ? a[i].GetNumber() : -1;
			}
			found.push_back(s);
		}
	} catch (const PdfError &e) {
		set_err(err, errlen, std::string(path) + ": " + podofo_why(e));
		return -1;
	} catch (const std::exception &e) {
		set_err(err, errlen, std::string(path) + ": " + e.what());
		return -1;
	}
	std::sort(found.begin(), found.end(), [](const struct pdf_sig &a, const struct pdf_sig &b) {
		return a.range[2] + a.range[3] < b.range[2] + b.range[3];
	});
	if (!found.empty()) {
		*sigs = static_cast<struct pdf_sig *>(std::calloc(found.size(), sizeof(**sigs)));
		if (*sigs == nullptr) {
			set_err(err, errlen, "out of memory");
			return -1;
		}
		std::copy(found.begin(), found.end(), *sigs);
	}
	*n = found.size();
	return 0;
}

extern "C" void pdf_sigs_free(struct pdf_sig *sigs, size_t n)
{
	(void)n;
	std::free(sigs);
}
