/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/secret.h"

/* Returns the VmFlags line of the mapping containing p from /proc/self/smaps. */
static int smaps_flags_for(const void *p, char *flags, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "re");
    char line[512];
    int in = 0;
    uintptr_t a = (uintptr_t)p;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = a >= lo && a < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, n, "%s", line);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static void test_secret_locked_dontdump(void **state) {
    _cleanup_(secret_freep) Secret *s = NULL;
    char flags[512];
    assert_int_equal(secret_new(100, &s), 0);
    assert_int_equal(secret_size(s), 100);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(secret_data(s)[i], 0);
    assert_true(secret_is_locked(s));
    assert_int_equal(smaps_flags_for(secret_data(s), flags, sizeof flags), 0);
#ifndef __SANITIZE_ADDRESS__
    /* ASan intercepts mlock() as a no-op (it would pin the shadow), so only check it without. */
    assert_non_null(strstr(flags, " lo"));
#endif
    assert_non_null(strstr(flags, " dd"));
}

static void test_secret_guard_page(void **state) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        Secret *s = NULL;
        struct rlimit rl = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &rl);
        (void)signal(SIGSEGV, SIG_DFL); /* cmocka's handler would turn the fault into an exit */
        if (secret_new(16, &s) < 0)
            _exit(3);
        /* Touch the page before the mapping's data: must fault. */
        volatile uint8_t *p = (uint8_t *)secret_data(s) - 4096;
        (void)*p;
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
}

static void test_secret_copy_truncate(void **state) {
    _cleanup_(secret_freep) Secret *s = NULL;
    assert_int_equal(secret_new_copy("hello world", 11, &s), 0);
    assert_memory_equal(secret_data(s), "hello world", 11);
    secret_truncate(s, 5);
    assert_int_equal(secret_size(s), 5);
    assert_int_equal(secret_data(s)[5], 0);
}

static void test_secret_oom(void **state) {
    Secret *s = NULL;
    nt_alloc_fail_after(0);
    assert_int_equal(secret_new(8, &s), -ENOMEM);
    nt_alloc_fail_after(-1);
    assert_null(s);
    assert_null(secret_free(NULL));
}

static void test_harden(void **state) {
    struct rlimit rl;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (nt_harden_process() < 0)
            _exit(1);
        if (prctl(PR_GET_DUMPABLE) != 0)
            _exit(2);
        if (getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_cur != 0)
            _exit(3);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_locked_dontdump),
        cmocka_unit_test(test_secret_guard_page),
        cmocka_unit_test(test_secret_copy_truncate),
        cmocka_unit_test(test_secret_oom),
        cmocka_unit_test(test_harden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
