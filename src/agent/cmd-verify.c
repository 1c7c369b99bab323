/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride verify REPORT [options]: verifies an SEV-SNP attestation report (raw 1184 bytes, "-"
 * for stdin) with its certificates and, with --policy, appraises it. No network access: the
 * certificates come from the evidence (--cert-table), a directory (--certs) or files (--cert);
 * AMD's ARK/ASK/ASVK for Milan, Genoa and Turin are built in, and further ARKs are trusted only
 * with --trust-anchor. --crl FILE checks the chain against an AMD CRL (e.g. KDS's
 * /vcek/v1/{product}/crl, DER or PEM); with it, check "revocation" is required.
 * Exit codes (agent.h): 0 pass, 1 invalid evidence, 2 policy mismatch, 3 usage or configuration
 * error, 4 I/O error. The verdict goes to stdout (human form or --json); a failure is also
 * logged once to stderr, naming the report and the failed check.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "agent.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "verify/crl.h"
#include "verify/verify.h"

#define REPORT_FILE_MAX (64u * 1024u)
#define TABLE_FILE_MAX (1024u * 1024u)
#define MAX_ANCHORS 8

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride verify REPORT [OPTIONS]\n"
            "Verify an SEV-SNP attestation report (raw bytes; '-' reads stdin).\n\n"
            "Certificates (no network access):\n"
            "  --cert-table FILE     extended-report certificate table (e.g. configfs auxblob)\n"
            "  --certs DIR           directory with vcek|vlek, ask|asvk, ark (.pem or .der)\n"
            "  --cert FILE           certificate file, role recognised (repeatable)\n"
            "  --trust-anchor FILE   also trust this ARK (e.g. a simulated chip's ark.pem)\n"
            "Verification:\n"
            "  --policy FILE         appraisal policy (docs/policy.md)\n"
            "  --at TIME             verification time, e.g. 2025-01-01T00:00:00Z (default now)\n"
            "  --product NAME        require this product (milan, genoa, turin)\n"
            "  --crl FILE            AMD CRL (DER or PEM) the chain must not be revoked by\n"
            "Output:\n"
            "  --json                print the verdict as JSON\n"
            "  -q, --quiet           print nothing; the exit code tells\n\n"
            "Exit codes: 0 pass, 1 invalid evidence, 2 policy mismatch, 3 usage, 4 I/O error.\n");
}

/* The revocation source behind --crl: the one file, whatever the product (a CRL of another
 * product fails its signature check against the chain's ARK). */
typedef struct CrlFile {
    uint8_t *der;
    size_t len;
    time_t mtime;
} CrlFile;

static int crl_file_get(void *userdata, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                        time_t *ret_fetched_at) {
    const CrlFile *f = userdata;
    (void)p;
    uint8_t *copy = malloc(f->len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, f->der, f->len);
    *ret_der = copy;
    *ret_len = f->len;
    *ret_fetched_at = f->mtime;
    return 0;
}

/* Reads a CRL file, DER or PEM, into DER. Returns 0, -EBADMSG (PEM that is not a CRL) or the
 * read error. */
static int crl_file_load(const char *path, CrlFile *ret) {
    _cleanup_free_ uint8_t *data = NULL;
    struct stat st;
    size_t len = 0;
    int r = read_full_file(path, NT_CRL_MAX_SIZE, &data, &len);
    if (r < 0)
        return r;
    if (len > 10 && memcmp(data, "-----BEGIN", 10) == 0) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_mem_buf(data, (int)len);
        X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        uint8_t *der = NULL;
        int n = crl ? i2d_X509_CRL(crl, &der) : -1;
        X509_CRL_free(crl);
        if (n <= 0)
            return -EBADMSG;
        free(data);
        data = der;
        len = (size_t)n;
    }
    ret->mtime = stat(path, &st) == 0 ? st.st_mtime : time(NULL);
    ret->der = TAKE_PTR(data);
    ret->len = len;
    return 0;
}

static int exit_for_errno(int r) {
    /* Files that cannot be read are I/O errors; malformed evidence is invalid evidence. */
    switch (-r) {
    case EBADMSG:
    case E2BIG:
    case EOPNOTSUPP:
    case EKEYREJECTED:
        return NT_EXIT_INVALID;
    case ENOMEM:
        return NT_EXIT_IO;
    default:
        return NT_EXIT_IO;
    }
}

int cmd_verify(int argc, char **argv) {
    enum {
        ARG_CERT_TABLE = 0x100,
        ARG_CERTS,
        ARG_CERT,
        ARG_ANCHOR,
        ARG_POLICY,
        ARG_AT,
        ARG_PRODUCT,
        ARG_JSON,
        ARG_CRL
    };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"cert-table", required_argument, NULL, ARG_CERT_TABLE},
        {"certs", required_argument, NULL, ARG_CERTS},
        {"cert", required_argument, NULL, ARG_CERT},
        {"trust-anchor", required_argument, NULL, ARG_ANCHOR},
        {"policy", required_argument, NULL, ARG_POLICY},
        {"at", required_argument, NULL, ARG_AT},
        {"product", required_argument, NULL, ARG_PRODUCT},
        {"json", no_argument, NULL, ARG_JSON},
        {"crl", required_argument, NULL, ARG_CRL},
        {"quiet", no_argument, NULL, 'q'},
        {},
    };
    _cleanup_(nt_verifier_freep) NtVerifier *verifier = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *bundle = nt_cert_bundle_new();
    _cleanup_(nt_policy_freep) NtPolicy *policy = NULL;
    _cleanup_(nt_verdict_freep) NtVerdict *verdict = NULL;
    _cleanup_free_ uint8_t *report = NULL;
    _cleanup_free_ char *perr = NULL;
    NtVerifyOptions opts = NT_VERIFY_OPTIONS_INIT;
    const char *cert_table = NULL, *certs_dir = NULL, *policy_path = NULL, *crl_path = NULL;
    _cleanup_free_ uint8_t *crl_der = NULL;
    CrlFile crl = {.der = NULL};
    const char *anchors[MAX_ANCHORS], *cert_files[NT_CERT_BUNDLE_MAX];
    size_t n_anchors = 0, n_cert_files = 0, report_len = 0;
    bool json = false, quiet = false;
    int c, r;

    if (!bundle)
        return log_oom(), NT_EXIT_IO;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hq", options, NULL)) >= 0)
        switch (c) {
        case 'h':
            help(stdout);
            return NT_EXIT_OK;
        case ARG_CERT_TABLE:
            cert_table = optarg;
            break;
        case ARG_CERTS:
            certs_dir = optarg;
            break;
        case ARG_CERT:
            if (n_cert_files >= ELEMENTSOF(cert_files)) {
                log_error("Too many --cert options (at most %zu).", ELEMENTSOF(cert_files));
                return NT_EXIT_USAGE;
            }
            cert_files[n_cert_files++] = optarg;
            break;
        case ARG_ANCHOR:
            if (n_anchors >= ELEMENTSOF(anchors)) {
                log_error("Too many --trust-anchor options (at most %zu).", ELEMENTSOF(anchors));
                return NT_EXIT_USAGE;
            }
            anchors[n_anchors++] = optarg;
            break;
        case ARG_POLICY:
            policy_path = optarg;
            break;
        case ARG_AT:
            if (nt_parse_time(optarg, &opts.at) < 0 || opts.at == 0) {
                log_error("Invalid --at time '%s': expected YYYY-MM-DDTHH:MM:SSZ.", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_PRODUCT:
            opts.product = snp_product_from_string(optarg);
            if (opts.product < 0) {
                log_error("Unknown --product '%s': expected milan, genoa or turin.", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_JSON:
            json = true;
            break;
        case ARG_CRL:
            crl_path = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            help(stderr);
            return NT_EXIT_USAGE;
        }
    if (optind != argc - 1) {
        log_error("Expected exactly one REPORT argument. Try 'nitride verify --help'.");
        return NT_EXIT_USAGE;
    }
    const char *report_path = argv[optind];

    r = nt_verifier_new(&verifier);
    if (r < 0) {
        log_error_errno(r, "Failed to set up the verifier (built-in AMD anchors): %m");
        return NT_EXIT_IO;
    }
    for (size_t i = 0; i < n_anchors; i++) {
        r = nt_verifier_add_trust_anchor_file(verifier, anchors[i]);
        if (r < 0) {
            log_error_errno(r, "Cannot use trust anchor '%s': %s", anchors[i],
                            r == -ENOENT         ? "no such file"
                            : r == -EKEYREJECTED ? "not a self-signed ARK"
                            : r == -EOPNOTSUPP   ? "not RSASSA-PSS SHA-384 / RSA-4096"
                            : r == -EBADMSG      ? "not an AMD ARK certificate (CN ARK-<product>)"
                                                 : "%m");
            return r == -ENOENT || r == -EACCES || r == -EISDIR ? NT_EXIT_IO : NT_EXIT_USAGE;
        }
    }
    if (crl_path) {
        r = crl_file_load(crl_path, &crl);
        if (r < 0) {
            log_error_errno(r, "Failed to read CRL '%s': %s", crl_path,
                            r == -EBADMSG ? "PEM that holds no X.509 CRL" : "%m");
            return r == -EBADMSG ? NT_EXIT_USAGE : NT_EXIT_IO;
        }
        crl_der = crl.der;
        NtRevocationSource src = {
            .name = crl_path,
            .get_crl = crl_file_get,
            .userdata = &crl,
            .mode = NT_REVOCATION_REQUIRE,
            .max_staleness_s = 0,
        };
        nt_verifier_set_revocation_source(verifier, &src);
    }
    if (policy_path) {
        r = nt_policy_load(policy_path, &policy, &perr);
        if (r < 0) {
            log_error("Invalid policy '%s': %s", policy_path, perr ? perr : strerror(-r));
            return r == -EBADMSG ? NT_EXIT_USAGE : NT_EXIT_IO;
        }
        opts.policy = policy;
    }

    r = read_full_file(report_path, REPORT_FILE_MAX, &report, &report_len);
    if (r < 0) {
        if (r == -EFBIG) {
            log_error("Report '%s' is far larger than an SEV-SNP report (%u bytes).", report_path,
                      SNP_REPORT_SIZE);
            return NT_EXIT_INVALID;
        }
        log_error_errno(r, "Failed to read report '%s': %m", report_path);
        return NT_EXIT_IO;
    }
    if (cert_table) {
        _cleanup_free_ uint8_t *t = NULL;
        size_t tl = 0;
        r = read_full_file(cert_table, TABLE_FILE_MAX, &t, &tl);
        if (r < 0) {
            log_error_errno(r, "Failed to read certificate table '%s': %m", cert_table);
            return NT_EXIT_IO;
        }
        r = nt_cert_bundle_add_table(bundle, t, tl);
        if (r < 0) {
            log_error_errno(r, "Invalid certificate table '%s': %s", cert_table,
                            r == -ENOENT ? "no certificates in it" : "%m");
            return NT_EXIT_INVALID;
        }
    }
    if (certs_dir) {
        r = nt_cert_bundle_add_dir(bundle, certs_dir);
        if (r == -ENOENT) {
            log_error("No certificates (vcek, vlek, ask, asvk, ark .pem/.der) in '%s'.", certs_dir);
            return NT_EXIT_IO;
        }
        if (r < 0) {
            log_error_errno(r, "Failed to load certificates from '%s': %m", certs_dir);
            return exit_for_errno(r);
        }
    }
    for (size_t i = 0; i < n_cert_files; i++) {
        r = nt_cert_bundle_add_file(bundle, cert_files[i]);
        if (r < 0) {
            log_error_errno(r, "Failed to load certificate '%s': %s", cert_files[i],
                            r == -EBADMSG ? "not an AMD SEV certificate (PEM or DER)" : "%m");
            return exit_for_errno(r);
        }
    }

    r = nt_verifier_verify(verifier, report, report_len, bundle, &opts, &verdict);
    if (r < 0) {
        log_error_errno(r, "Failed to verify '%s': %m", report_path);
        return NT_EXIT_IO;
    }

    if (json && !quiet) {
        json_auto_t *j = nt_verdict_to_json(verdict);
        if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
            return log_oom(), NT_EXIT_IO;
        fputc('\n', stdout);
    } else if (!quiet) {
        printf("Report %s:\n", report_path);
        nt_verdict_print(verdict, stdout);
    }
    if (fflush(stdout) != 0) {
        log_error("Failed to write the verdict: %m");
        return NT_EXIT_IO;
    }

    NtVerdictStatus st = nt_verdict_status(verdict);
    const NtCheck *f = nt_verdict_first_failure(verdict);
    if (st == NT_VERDICT_OK)
        return NT_EXIT_OK;
    if (f)
        log_error("Report '%s' %s: %s: %s%s%s%s%s%s", report_path,
                  st == NT_VERDICT_INVALID ? "is not valid evidence" : "does not meet the policy",
                  f->name, f->detail, f->detail[0] && f->expected ? "; " : "",
                  f->expected ? "expected " : "", f->expected ? f->expected : "",
                  f->found ? ", found " : "", f->found ? f->found : "");
    return st == NT_VERDICT_INVALID ? NT_EXIT_INVALID : NT_EXIT_POLICY;
}
