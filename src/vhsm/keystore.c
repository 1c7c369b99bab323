/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: being written. */
typedef int nt_placeholder_keystore_;
