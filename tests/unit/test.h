/*
 * test.h - the unit-test harness: CHECK macros that count and report
 * failures, and TEST_MAIN which runs the listed test functions and prints
 * the closing "N passed, N failed" line. One binary per module:
 * tests/unit/test_<module>.c, run by name from tests/run.sh.
 */
#ifndef WH_TEST_H
#define WH_TEST_H

#include <stdio.h>
#include <string.h>

static int t_passed, t_failed;

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (cond) {                                                      \
            t_passed++;                                                  \
        } else {                                                         \
            t_failed++;                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                    \
        }                                                                \
    } while (0)

#define CHECK_INT(a, b)                                                  \
    do {                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);              \
        if (a_ == b_) {                                                  \
            t_passed++;                                                  \
        } else {                                                         \
            t_failed++;                                                  \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n",        \
                    __FILE__, __LINE__, #a, a_, b_);                     \
        }                                                                \
    } while (0)

#define CHECK_STR(a, b)                                                  \
    do {                                                                 \
        const char *a_ = (a), *b_ = (b);                                 \
        if (a_ && b_ && strcmp(a_, b_) == 0) {                           \
            t_passed++;                                                  \
        } else {                                                         \
            t_failed++;                                                  \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n",    \
                    __FILE__, __LINE__, #a, a_ ? a_ : "(null)",          \
                    b_ ? b_ : "(null)");                                 \
        }                                                                \
    } while (0)

#define CHECK_MEM(a, alen, b, blen)                                      \
    do {                                                                 \
        size_t al_ = (alen), bl_ = (blen);                               \
        if (al_ == bl_ && memcmp((a), (b), al_) == 0) {                  \
            t_passed++;                                                  \
        } else {                                                         \
            t_failed++;                                                  \
            fprintf(stderr, "%s:%d: %s (%zu bytes) differs from %s "     \
                    "(%zu bytes)\n", __FILE__, __LINE__, #a, al_, #b,    \
                    bl_);                                                \
        }                                                                \
    } while (0)

#define TEST_MAIN(...)                                                   \
    int main(void)                                                       \
    {                                                                    \
        void (*tests_[])(void) = {__VA_ARGS__};                          \
        for (size_t i_ = 0; i_ < sizeof(tests_) / sizeof(tests_[0]);     \
             i_++)                                                       \
            tests_[i_]();                                                \
        printf("%s: %d passed, %d failed\n", __FILE__, t_passed,         \
               t_failed);                                                \
        return t_failed ? 1 : 0;                                         \
    }

#endif
