/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the benchmarks (bench/common.c): clock, medians and percentiles, files in
 * the benchmark's temporary directory, and starting a daemon that writes its port to a file.
 * A benchmark registers the daemons it starts so that bench_die() kills them.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The program's name for messages ("bench-release"). */
extern const char *bench_name;

/* Prints "<bench_name>: <what> failed", kills the registered daemons and exits 2. */
_Noreturn void bench_die(const char *what);
/* Daemons killed by bench_die() and bench_stop_all(). */
void bench_register_pid(pid_t pid);
/* SIGTERM to every registered daemon, then waits for them. */
void bench_stop_all(void);

double bench_mono(void); /* CLOCK_MONOTONIC, seconds */
int bench_cmp_double(const void *a, const void *b);
/* Sorts v and returns its median / its p-th percentile (0 < p < 100). */
double bench_median(double *v, size_t n);
double bench_percentile(double *v, size_t n, double p);

/* Writes text to path with mode (dies on failure). */
void bench_write_text(const char *path, const char *text, mode_t mode);

/* Forks and execs argv (argv[0] is the program's path) with stderr to log (or /dev/null when
 * NULL), registers it, and waits up to 10 s for port_file to hold a port. Returns the port;
 * dies when the daemon does not start. *ret_pid gets the process. */
unsigned bench_start_daemon(char *const argv[], const char *port_file, const char *log,
                            pid_t *ret_pid);

/* A nitride service (attestd, kmsd) as bench_start_daemon: `exe --config DIR/NAME.json
 * --port-file DIR/NAME.port`, its log in DIR/NAME.log. Returns the port; *ret_pid the process. */
unsigned bench_start_service(const char *dir, const char *exe, const char *name, pid_t *ret_pid);

/* CPU time (user + system) a process has used so far, seconds: pid 0 for this one. -1 when its
 * /proc entry cannot be read. */
double bench_cpu_seconds(pid_t pid);

/* rm -rf dir (a warning when it fails). */
void bench_remove_tree(const char *dir);

/* Runs a shell command; dies (naming it) when it fails. */
void bench_run(const char *cmd);

/* A throwaway CA (dir/ca.pem) and a server certificate for 127.0.0.1 (dir/tls.pem, dir/tls.key),
 * as the tests' make_tls. Dies on failure. */
void bench_make_tls(const char *dir);

/* The command or path is there (`command -v`). */
bool bench_have(const char *cmd_name);

/* Tang's paths (Debian's tang package). */
#define BENCH_TANGD "/usr/libexec/tangd"
#define BENCH_TANGD_KEYGEN "/usr/libexec/tangd-keygen"

/* Tang behind socat on a free loopback port, registered: tangd is inetd-style (one process per
 * connection, as Debian's tangd.socket runs it). Its keys are made in db_dir; port_file is a
 * scratch file. Returns the port (socat may still be starting) and, when ret_pid is not NULL,
 * socat's pid in *ret_pid; dies on failure. */
unsigned bench_start_tang(const char *db_dir, const char *port_file, pid_t *ret_pid);
