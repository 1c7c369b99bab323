/* SPDX-License-Identifier: Apache-2.0 */
#include "openssl-util.h"

#include "log.h"

int nt_openssl_error(int fallback, const char *what) {
    unsigned long e;
    const char *file, *data;
    int line, flags;
    char buf[256];

    while ((e = ERR_get_error_all(&file, &line, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        log_debug("OpenSSL%s%s: %s%s%s", what ? " " : "", what ? what : "", buf,
                  (flags & ERR_TXT_STRING) && data ? ": " : "",
                  (flags & ERR_TXT_STRING) && data ? data : "");
    }
    return fallback;
}
