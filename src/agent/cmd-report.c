/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride report show|get: look at an attestation report, or ask the evidence provider for one.
 *
 *   report show FILE|- [--json] [--product milan|genoa|turin]
 *   report get [--provider auto|sev-guest|tsm|sim] [--sim-dir DIR]
 *              (--report-data HEX128 | --nonce HEX) [--vmpl N] [--extended] --out FILE
 *              [--certs-out FILE] [--certs-dir DIR] [--show] [--json] [--product P]
 *
 * A report that comes from a file or from a provider is untrusted input: it goes through the
 * strict snp_report_parse() before anything is printed or written, and "get" also checks that
 * the provider returned the REPORT_DATA and VMPL that were asked for. Exit codes (agent.h):
 * malformed report or certificate table 1, usage 3, I/O 4, no provider 5. Errors are logged
 * once, here, naming the object and the reason.
 */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "agent.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/certtable.h"
#include "snp/provider.h"
#include "snp/report.h"

/* Anything bigger than this is certainly not a report; refuse before reading it all. */
#define REPORT_FILE_MAX (64u * 1024u)
#define NONCE_MAX 4096u

static void report_usage(FILE *f) {
    fprintf(f, "Usage: nitride report show FILE|- [--json] [--product milan|genoa|turin]\n"
               "       nitride report get [--provider auto|sev-guest|tsm|sim] [--sim-dir DIR]\n"
               "                          (--report-data HEX128 | --nonce HEX) [--vmpl N]\n"
               "                          [--extended] --out FILE [--certs-out FILE]\n"
               "                          [--certs-dir DIR] [--show [--json] [--product P]]\n"
               "\n"
               "show   decodes every field of a 1184-byte SEV-SNP ATTESTATION_REPORT. TCBs are\n"
               "       decoded for the product named by CPUID (version 3 and later) or --product.\n"
               "get    requests a report from the evidence provider. REPORT_DATA is the 64 bytes\n"
               "       given by --report-data, or SHA-512 of the bytes given by --nonce.\n"
               "       --extended also fetches the certificate table (implied by --certs-out and\n"
               "       --certs-dir, which writes ark.pem, ask.pem/asvk.pem, vcek.pem/vlek.pem).\n");
}

static int parse_product(const char *s, SnpProduct *ret) {
    SnpProduct p = snp_product_from_string(s);
    if (p < 0) {
        log_error("Unknown product '%s' (expected milan, genoa or turin).", s);
        return -EINVAL;
    }
    *ret = p;
    return 0;
}

static int print_report(const SnpReport *r, SnpProduct product, bool json) {
    if (json) {
        json_auto_t *j = snp_report_to_json(r, product);
        if (!j || json_dumpf(j, stdout, JSON_INDENT(2)) < 0) {
            log_oom();
            return NT_EXIT_IO;
        }
        fputc('\n', stdout);
    } else
        snp_report_print(r, product, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("Failed to write to standard output.");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

/* Parses untrusted report bytes; logs the reason on failure. Returns an exit code. */
static int parse_report_checked(const uint8_t *buf, size_t len, const char *what, SnpReport *ret) {
    const char *reason = NULL;
    int r = snp_report_parse(buf, len, ret, &reason);
    if (r == -EMSGSIZE) {
        log_error("Invalid report %s: %zu bytes, an attestation report is %u bytes.", what, len,
                  SNP_REPORT_SIZE);
        return NT_EXIT_INVALID;
    }
    if (r < 0) {
        log_error_errno(r, "Invalid report %s: %s (%m).", what, reason ? reason : "malformed");
        return NT_EXIT_INVALID;
    }
    return NT_EXIT_OK;
}

static int report_show(int argc, char **argv) {
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"product", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    bool json = false;
    SnpProduct product = _SNP_PRODUCT_INVALID;
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_free_ char *what = NULL;
    size_t len = 0;
    SnpReport rep;
    const char *path;
    int c, r;

    optind = 0; /* GNU getopt permutes: options may come before or after FILE */
    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'p':
            if (parse_product(optarg, &product) < 0)
                return NT_EXIT_USAGE;
            break;
        case 'h':
            report_usage(stdout);
            return NT_EXIT_OK;
        default:
            report_usage(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        log_error("'nitride report show' needs a FILE (or - for standard input).");
        return NT_EXIT_USAGE;
    }
    path = argv[optind++];
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }

    r = read_full_file(path, REPORT_FILE_MAX, &buf, &len);
    if (r == -EFBIG) {
        log_error("Invalid report '%s': larger than %u bytes, an attestation report is %u bytes.",
                  path, REPORT_FILE_MAX, SNP_REPORT_SIZE);
        return NT_EXIT_INVALID;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to read report '%s': %m", path);
        return NT_EXIT_IO;
    }
    if (asprintf(&what, "'%s'", streq(path, "-") ? "(stdin)" : path) < 0) {
        what = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    r = parse_report_checked(buf, len, what, &rep);
    if (r != NT_EXIT_OK)
        return r;
    return print_report(&rep, product, json);
}

/* Writes one DER certificate from the table as PEM (validating that it is one). */
static int write_cert_pem(const char *dir, const char *name, const SnpCertEntry *e) {
    _cleanup_(X509_freep) X509 *x = NULL;
    _cleanup_(BIO_free_allp) BIO *mem = NULL;
    _cleanup_free_ char *path = NULL;
    const unsigned char *p = e->der;
    char *pem = NULL;
    long pem_len;
    int r;

    if (e->der_len > LONG_MAX) {
        log_error("Invalid certificate table: the %s entry is too large.",
                  snp_cert_kind_to_string(e->kind));
        return NT_EXIT_INVALID;
    }
    x = d2i_X509(NULL, &p, (long)e->der_len);
    if (!x || p != e->der + e->der_len) {
        (void)nt_openssl_error(-EBADMSG, "d2i_X509");
        log_error("Invalid certificate table: the %s entry is not one DER certificate.",
                  snp_cert_kind_to_string(e->kind));
        return NT_EXIT_INVALID;
    }
    mem = BIO_new(BIO_s_mem());
    if (!mem || PEM_write_bio_X509(mem, x) != 1) {
        log_error_errno(nt_openssl_error(-EIO, "PEM_write_bio_X509"),
                        "Failed to encode the %s certificate as PEM: %m", name);
        return NT_EXIT_IO;
    }
    pem_len = BIO_get_mem_data(mem, &pem);
    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        path = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    r = write_file_atomic(path, pem, (size_t)pem_len, 0644);
    if (r < 0) {
        log_error_errno(r, "Failed to write '%s': %m", path);
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

static int write_certs_dir(const char *dir, const SnpCertTable *t) {
    const SnpCertEntry *vcek = snp_cert_table_find(t, SNP_CERT_VCEK),
                       *vlek = snp_cert_table_find(t, SNP_CERT_VLEK),
                       *ask = snp_cert_table_find(t, SNP_CERT_ASK),
                       *ark = snp_cert_table_find(t, SNP_CERT_ARK);
    int r;

    if (!vcek && !vlek) {
        log_error("The certificate table holds neither a VCEK nor a VLEK; nothing to write to "
                  "'%s'.",
                  dir);
        return NT_EXIT_INVALID;
    }
    r = mkdir_p(dir, 0755);
    if (r < 0) {
        log_error_errno(r, "Failed to create '%s': %m", dir);
        return NT_EXIT_IO;
    }
    /* In a VLEK table the ASK GUID carries the ASVK (GHCB spec). */
    if (vcek && (r = write_cert_pem(dir, "vcek.pem", vcek)) != NT_EXIT_OK)
        return r;
    if (vlek && (r = write_cert_pem(dir, "vlek.pem", vlek)) != NT_EXIT_OK)
        return r;
    if (ask && (r = write_cert_pem(dir, vlek && !vcek ? "asvk.pem" : "ask.pem", ask)) != NT_EXIT_OK)
        return r;
    if (ark && (r = write_cert_pem(dir, "ark.pem", ark)) != NT_EXIT_OK)
        return r;
    for (size_t i = 0; i < t->n_entries; i++)
        if (t->entries[i].kind == SNP_CERT_OTHER) {
            char guid[33];
            hex_encode(t->entries[i].guid, sizeof t->entries[i].guid, guid);
            log_info("Certificate table entry with unknown GUID %s not written.", guid);
        }
    return NT_EXIT_OK;
}

static int report_get(int argc, char **argv) {
    enum { ARG_SIM_DIR = 0x100, ARG_REPORT_DATA, ARG_CERTS_OUT, ARG_CERTS_DIR };
    static const struct option options[] = {
        {"provider", required_argument, NULL, 'P'},
        {"sim-dir", required_argument, NULL, ARG_SIM_DIR},
        {"report-data", required_argument, NULL, ARG_REPORT_DATA},
        {"nonce", required_argument, NULL, 'n'},
        {"vmpl", required_argument, NULL, 'v'},
        {"extended", no_argument, NULL, 'e'},
        {"out", required_argument, NULL, 'o'},
        {"certs-out", required_argument, NULL, ARG_CERTS_OUT},
        {"certs-dir", required_argument, NULL, ARG_CERTS_DIR},
        {"show", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"product", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    const char *provider_name = NULL, *sim_dir = NULL, *out = NULL, *certs_out = NULL,
               *certs_dir = NULL, *report_data_hex = NULL, *nonce_hex = NULL;
    bool extended = false, show = false, json = false;
    SnpProduct product = _SNP_PRODUCT_INVALID;
    uint32_t vmpl = 0;
    uint8_t report_data[64] = {};
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    _cleanup_free_ uint8_t *report = NULL, *certs = NULL;
    size_t report_len = 0, certs_len = 0;
    SnpReport rep;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        switch (c) {
        case 'P':
            provider_name = streq(optarg, "auto") ? NULL : optarg;
            if (provider_name && !streq(provider_name, "sev-guest") &&
                !streq(provider_name, "tsm") && !streq(provider_name, "sim")) {
                log_error("Unknown provider '%s' (expected auto, sev-guest, tsm or sim).", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_SIM_DIR:
            sim_dir = optarg;
            break;
        case ARG_REPORT_DATA:
            report_data_hex = optarg;
            break;
        case 'n':
            nonce_hex = optarg;
            break;
        case 'v': {
            char *end = NULL;
            unsigned long v;
            errno = 0;
            v = strtoul(optarg, &end, 10);
            if (errno != 0 || !end || *end != '\0' || end == optarg || v > 3) {
                log_error("Invalid --vmpl '%s' (expected 0, 1, 2 or 3).", optarg);
                return NT_EXIT_USAGE;
            }
            vmpl = (uint32_t)v;
            break;
        }
        case 'e':
            extended = true;
            break;
        case 'o':
            out = optarg;
            break;
        case ARG_CERTS_OUT:
            certs_out = optarg;
            extended = true;
            break;
        case ARG_CERTS_DIR:
            certs_dir = optarg;
            extended = true;
            break;
        case 's':
            show = true;
            break;
        case 'j':
            json = show = true; /* --json only changes how --show prints */
            break;
        case 'p':
            if (parse_product(optarg, &product) < 0)
                return NT_EXIT_USAGE;
            break;
        case 'h':
            report_usage(stdout);
            return NT_EXIT_OK;
        default:
            report_usage(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (!out) {
        log_error("'nitride report get' needs --out FILE.");
        return NT_EXIT_USAGE;
    }
    if (!!report_data_hex == !!nonce_hex) {
        log_error("'nitride report get' needs exactly one of --report-data HEX128 and "
                  "--nonce HEX: a report without fresh REPORT_DATA proves nothing about when "
                  "it was made.");
        return NT_EXIT_USAGE;
    }
    if (sim_dir) {
        if (provider_name && !streq(provider_name, "sim")) {
            log_error("--sim-dir only applies to --provider sim.");
            return NT_EXIT_USAGE;
        }
        provider_name = "sim"; /* naming a chip directory means the simulator */
    }
    if (report_data_hex) {
        if (hex_decode_exact(report_data_hex, report_data, sizeof report_data) < 0) {
            log_error("Invalid --report-data: expected exactly 128 hex digits (64 bytes).");
            return NT_EXIT_USAGE;
        }
    } else {
        _cleanup_free_ uint8_t *nonce = NULL;
        size_t nonce_len = 0;
        if (strlen(nonce_hex) > 2 * NONCE_MAX ||
            hex_decode_alloc(nonce_hex, &nonce, &nonce_len) < 0 || nonce_len == 0) {
            log_error("Invalid --nonce: expected 1 to %u bytes as an even number of hex digits.",
                      NONCE_MAX);
            return NT_EXIT_USAGE;
        }
        (void)SHA512(nonce, nonce_len, report_data);
    }

    r = snp_provider_open(provider_name, sim_dir, &prov);
    if (r == -ENODEV) {
        log_error("%s", snp_provider_missing_message());
        return NT_EXIT_NO_PROVIDER;
    }
    if (r == -ENOENT && provider_name && streq(provider_name, "sim")) {
        log_error_errno(r,
                        "No simulated chip in '%s': %m. Create one with 'nitride sim init DIR "
                        "--product milan|genoa|turin'.",
                        sim_dir ? sim_dir : "$NITRIDE_SIM_DIR");
        return NT_EXIT_NO_PROVIDER;
    }
    if (r == -ENOENT) {
        /* The named provider's device or configfs directory is missing. */
        log_error_errno(r, "Evidence provider '%s' is not usable on this host: %m. %s",
                        provider_name ? provider_name : "auto", snp_provider_missing_message());
        return NT_EXIT_NO_PROVIDER;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to open evidence provider '%s': %m",
                        provider_name ? provider_name : "auto");
        return NT_EXIT_IO;
    }

    if (extended)
        r = snp_provider_get_ext_report(prov, report_data, vmpl, &report, &report_len, &certs,
                                        &certs_len);
    else
        r = snp_provider_get_report(prov, report_data, vmpl, &report, &report_len);
    if (r < 0) {
        log_error_errno(r, "Evidence provider '%s' (%s) failed to produce a%s report: %m",
                        snp_provider_info(prov)->name, snp_provider_info(prov)->detail,
                        extended ? "n extended" : "");
        return NT_EXIT_IO;
    }

    /* The provider's output is untrusted until parsed, and it must answer what was asked. */
    r = parse_report_checked(report, report_len, "from the evidence provider", &rep);
    if (r != NT_EXIT_OK)
        return r;
    if (CRYPTO_memcmp(rep.report_data, report_data, sizeof report_data) != 0) {
        log_error("Invalid report from the evidence provider: REPORT_DATA differs from the "
                  "requested value.");
        return NT_EXIT_INVALID;
    }
    if (rep.vmpl != vmpl) {
        log_error("Invalid report from the evidence provider: VMPL %u, requested %u.", rep.vmpl,
                  vmpl);
        return NT_EXIT_INVALID;
    }

    if (extended) {
        SnpCertTable table;
        if (certs_len == 0) {
            if (certs_out || certs_dir) {
                log_error("The host supplied no certificates with the extended report.");
                return NT_EXIT_INVALID;
            }
        } else {
            r = snp_cert_table_parse(certs, certs_len, &table);
            if (r < 0) {
                log_error_errno(r, "Invalid certificate table from the evidence provider: %m");
                return NT_EXIT_INVALID;
            }
            if (certs_dir && (r = write_certs_dir(certs_dir, &table)) != NT_EXIT_OK)
                return r;
            if (certs_out) {
                r = write_file_atomic(certs_out, certs, certs_len, 0644);
                if (r < 0) {
                    log_error_errno(r, "Failed to write '%s': %m", certs_out);
                    return NT_EXIT_IO;
                }
            }
        }
    }

    r = write_file_atomic(out, report, report_len, 0644);
    if (r < 0) {
        log_error_errno(r, "Failed to write '%s': %m", out);
        return NT_EXIT_IO;
    }
    if (show)
        return print_report(&rep, product, json);
    return NT_EXIT_OK;
}

int cmd_report(int argc, char **argv) {
    if (argc < 2) {
        report_usage(stderr);
        return NT_EXIT_USAGE;
    }
    if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
        report_usage(stdout);
        return NT_EXIT_OK;
    }
    if (streq(argv[1], "show"))
        return report_show(argc - 1, argv + 1);
    if (streq(argv[1], "get"))
        return report_get(argc - 1, argv + 1);
    log_error("Unknown 'nitride report' verb '%s' (expected show or get).", argv[1]);
    return NT_EXIT_USAGE;
}
