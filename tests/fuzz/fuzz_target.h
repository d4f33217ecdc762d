/* fuzz_target.h: what every fuzz target and the replay driver share.
 *
 * A target is one LLVMFuzzerTestOneInput. Under libFuzzer (HERD_FUZZ=ON,
 * clang) the sanitizers report memory errors; invariant violations are
 * reported by FUZZ_CHECK, which prints what broke and aborts, so libFuzzer
 * saves the input as a crash and the replay driver fails its ctest test. */
#ifndef HERD_FUZZ_TARGET_H
#define HERD_FUZZ_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "herd_proto.h" /* HERD_MAX_NAME */

/* The libFuzzer entry point; declared here so -Wmissing-prototypes is happy. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference reading of a server name (PROTOCOL.md section 9): 1 to
 * HERD_MAX_NAME letters, digits, '_' or '-'. */
static inline bool fuzz_ref_name(const uint8_t *s, size_t n)
{
    if (n < 1 || n > HERD_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Aborts with the file, line and a message when an invariant fails. */
#define FUZZ_CHECK(cond, ...)                                                                 \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#endif
