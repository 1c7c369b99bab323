/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The core allocator: thin wrappers over malloc with a fail-after-N hook so that unit tests can
 * loop over every allocation of an operation and check that each failure is handled (SQLite's
 * test_malloc.c idea). The hook costs one atomic load when disabled.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* After n more successful allocations, every allocation fails until reset. n < 0 disables. */
void nt_alloc_fail_after(long n);
/* True if the hook says this allocation must fail (consumes one count). */
bool nt_alloc_should_fail(void);

void *nt_malloc(size_t n);
void *nt_calloc(size_t nmemb, size_t size);
char *nt_strdup(const char *s);
void *nt_memdup(const void *p, size_t n);
