/* Token-layer error values: names for operators, and the one place CK_RV becomes enum tok_err. */
#include "pkcs11/token.h"

const char *tok_strerror(int err)
{
	switch (err) {
	case TOK_OK:
		return "success";
	case TOK_ERR_INTERNAL:
		return "internal error in the token layer";
	case TOK_ERR_NOT_FOUND:
		return "token, key or certificate not found";
	case TOK_ERR_UNAVAILABLE:
		return "token unavailable (removed, device error or session lost)";
	case TOK_ERR_PIN:
		return "PIN incorrect, locked or expired, or PIN file unusable";
	case TOK_ERR_BAD_INPUT:
		return "input cannot be signed with this key";
	case TOK_ERR_MODULE:
		return "PKCS#11 module not allowed or not loadable";
	case TOK_ERR_MECHANISM:
		return "mechanism not supported by the token";
	case TOK_ERR_EXISTS:
		return "object already exists on the token";
	case TOK_ERR_BUSY:
		return "the token has no free session (CKR_SESSION_COUNT)";
	case TOK_ERR_UNUSABLE:
		return "the wrapped key is unusable (damaged, not this credential's, or its KEK is "
		       "missing)";
	}
	return "unknown token error";
}

/* The callers above this layer only need to tell "retry later" (token gone, session lost,
 * login lost) from "the request is wrong" from "we are broken"; anything not listed here is a
 * surprise and is reported as internal so that it gets looked at. */
int tok_err_from_rv(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return TOK_OK;
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_USER_NOT_LOGGED_IN:
		return TOK_ERR_UNAVAILABLE;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		return TOK_ERR_PIN;
	case CKR_DATA_LEN_RANGE:
	case CKR_DATA_INVALID:
	case CKR_ARGUMENTS_BAD:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
		return TOK_ERR_BAD_INPUT;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
		return TOK_ERR_MECHANISM;
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_KEY_HANDLE_INVALID:
		return TOK_ERR_NOT_FOUND;
	case CKR_SESSION_COUNT:
		/* The token (or another application) holds all the sessions it allows: nothing
		 * is wrong with the token or the request. */
		return TOK_ERR_BUSY;
	default:
		return TOK_ERR_INTERNAL;
	}
}
