/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libjose's OpenSSL glue (jose/openssl.h) names the legacy RSA and EC_KEY types, which
 * OPENSSL_NO_DEPRECATED hides. Nitride uses only its EVP_PKEY functions; declaring the two
 * opaque types here (C11 allows repeating an identical typedef) lets every user include it the
 * same way.
 */
#pragma once

#include <openssl/evp.h>

typedef struct rsa_st RSA;
typedef struct ec_key_st EC_KEY;
#include <jose/openssl.h>
