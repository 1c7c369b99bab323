/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/macro.h"

static char dir[] = "/tmp/nt-test-fileio-XXXXXX";

static int setup(void **state) {
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_atomic_write_and_read(void **state) {
    char path[256];
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    struct stat st;
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof path, "%s/f", dir);
    assert_int_equal(write_file_atomic(path, "one", 3, 0600), 0);
    assert_int_equal(write_file_atomic(path, "second", 6, 0640), 0);
    assert_int_equal(read_full_file(path, 100, &buf, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(buf, "second", 6);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    /* no temp files left behind */
    d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    assert_int_equal(n, 1);
}

static void test_read_bounded(void **state) {
    char path[256];
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/big", dir);
    assert_int_equal(write_file_atomic(path, "0123456789", 10, 0600), 0);
    assert_int_equal(read_full_file(path, 9, &buf, &len), -EFBIG);
    assert_null(buf);
    assert_int_equal(read_full_file(path, 10, &buf, &len), 0);
    free(buf);
    assert_int_equal(read_full_file("/nonexistent/x", 10, &buf, &len), -ENOENT);
    assert_int_equal(read_full_file(dir, 10, &buf, &len), -EISDIR);
}

static void test_mkdir_p(void **state) {
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    assert_int_equal(mkdir_p(path, 0700), 0);
    assert_int_equal(mkdir_p(path, 0700), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic_write_and_read),
        cmocka_unit_test(test_read_bounded),
        cmocka_unit_test(test_mkdir_p),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
