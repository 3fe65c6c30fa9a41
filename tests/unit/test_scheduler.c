/* Unit tests for scheduler/batch.c's Postgres array-literal builder: the
 * claimed ids travel to DELETE as one text[] parameter, so quoting must be
 * exact and the buffer bound must hold. */
#include <string.h>

#include "scheduler.h"
#include "test.h"

static void test_array(void)
{
    wh_buf b;
    wh_buf_init(&b, 64);
    CHECK_INT(wh_buf_addc(&b, '{'), WH_OK);
    CHECK_INT(sc_array_add(&b, "msg_1", 5), WH_OK);
    CHECK_INT(sc_array_add(&b, "a\"b\\c", 5), WH_OK);
    CHECK_INT(sc_array_add(&b, "", 0), WH_OK);
    CHECK_INT(wh_buf_addc(&b, '}'), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "{\"msg_1\",\"a\\\"b\\\\c\",\"\"}");
    wh_buf_free(&b);
}

static void test_array_bound(void)
{
    wh_buf b;
    wh_buf_init(&b, 10);
    CHECK_INT(wh_buf_addc(&b, '{'), WH_OK);
    CHECK_INT(sc_array_add(&b, "1234567", 7), WH_OK); /* {"1234567" = 10 */
    CHECK_INT(b.len, 10);
    CHECK_INT(sc_array_add(&b, "x", 1), WH_ERR);      /* no room: unchanged */
    CHECK_INT(b.len, 10);
    wh_buf_reset(&b);
    CHECK_INT(wh_buf_addc(&b, '{'), WH_OK);
    CHECK_INT(sc_array_add(&b, "\"\"\"\"", 4), WH_ERR); /* escapes count */
    CHECK_INT(b.len, 1);
    wh_buf_free(&b);
}

TEST_MAIN(test_array, test_array_bound)
