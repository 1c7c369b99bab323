/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper for the verify integration tests: writes a simulated chip's signed report and its
 * certificate table, as a guest would get them from SNP_GET_EXT_REPORT.
 *   sim-evidence CHIPDIR OUTDIR [REPORT_DATA_HEX]
 * writes OUTDIR/report.bin and OUTDIR/certs.bin. REPORT_DATA_HEX is 128 hex characters
 * (default all zero). Exit 0 or 1 with a message.
 */
#include <stdio.h>
#include <string.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "snp/sim.h"

int main(int argc, char **argv) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_free_ uint8_t *table = NULL;
    uint8_t rd[64] = {0}, rep[SNP_REPORT_SIZE];
    char path[4096];
    size_t tlen = 0;
    int r;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "Usage: %s CHIPDIR OUTDIR [REPORT_DATA_HEX]\n", argv[0]);
        return 1;
    }
    if (argc == 4 && hex_decode_exact(argv[3], rd, sizeof rd) < 0) {
        fprintf(stderr, "REPORT_DATA_HEX must be 128 hex characters\n");
        return 1;
    }
    r = sim_chip_load(argv[1], &c);
    if (r >= 0)
        r = sim_chip_get_report(c, rd, sim_chip_launch(c)->vmpl, rep);
    if (r >= 0)
        r = sim_chip_get_cert_table(c, &table, &tlen);
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-r));
        return 1;
    }
    snprintf(path, sizeof path, "%s/report.bin", argv[2]);
    r = write_file_atomic(path, rep, sizeof rep, 0644);
    if (r >= 0) {
        snprintf(path, sizeof path, "%s/certs.bin", argv[2]);
        r = write_file_atomic(path, table, tlen, 0644);
    }
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(-r));
        return 1;
    }
    return 0;
}
