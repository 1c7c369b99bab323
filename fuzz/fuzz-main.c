/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replay driver for fuzz targets in normal builds (systemd's fuzz-main.c idea): runs
 * LLVMFuzzerTestOneInput over every file given on the command line or found in the given
 * directories, so every corpus entry and every crash ever found stays a regression test under
 * meson test. Exits non-zero if an input cannot be read or no input was found.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    int r = read_full_file(path, 16 * 1024 * 1024, &buf, &len);
    if (r < 0) {
        fprintf(stderr, "Failed to read %s: %s\n", path, strerror(-r));
        return r;
    }
    (void)LLVMFuzzerTestOneInput(buf, len);
    return 0;
}

int main(int argc, char **argv) {
    unsigned n = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            perror(argv[i]);
            return EXIT_FAILURE;
        }
        if (S_ISDIR(st.st_mode)) {
            struct dirent **names = NULL;
            int k = scandir(argv[i], &names, NULL, alphasort);
            if (k < 0) {
                perror(argv[i]);
                return EXIT_FAILURE;
            }
            for (int j = 0; j < k; j++) {
                char path[4096];
                if (names[j]->d_name[0] != '.') {
                    snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
                    if (run_file(path) < 0)
                        return EXIT_FAILURE;
                    n++;
                }
                free(names[j]);
            }
            free(names);
        } else {
            if (run_file(argv[i]) < 0)
                return EXIT_FAILURE;
            n++;
        }
    }
    printf("%u inputs replayed\n", n);
    return n > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
