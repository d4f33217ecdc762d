/* herd_admin_page: what the page draws and that every name is escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_admin_page.h"

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_names_are_escaped(void **state)
{
    (void)state;
    herd_page_server_t servers[] = {{"A<b>&\"'", true, -1}, {"N", false, 0}};
    herd_page_link_t links[] = {{0, 1, 0, HERD_PAGE_NEVER}};
    herd_page_t p = {.self = "A<b>&\"'", .version = "1<2", .health = "isolated", .reason = "<script>x</script>",
                     .servers = servers, .n_servers = 2, .links = links, .n_links = 1};
    size_t len = 0;
    char *html = herd_admin_page_render(&p, &len);
    assert_non_null(html);
    assert_int_equal(strlen(html), len);
    assert_null(strstr(html, "<b>&"));
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "1<2"));
    assert_non_null(strstr(html, "A&lt;b&gt;&amp;&quot;&#39;"));
    assert_non_null(strstr(html, "&lt;script&gt;x&lt;/script&gt;"));
    assert_non_null(strstr(html, "<tr data-peer=\"N\" data-state=\"down\">"));
    assert_non_null(strstr(html, "none yet"));
    free(html);
}

static void test_every_server_and_link_is_drawn(void **state)
{
    (void)state;
    herd_page_server_t servers[] = {{"S", true, -1}, {"U", false, 1}, {"D", false, 0}, {"O", false, -1}};
    herd_page_link_t links[] = {{0, 1, 1, 3.25}, {0, 2, 0, 75}, {1, 3, -1, HERD_PAGE_UNKNOWN}, {9, 0, 1, 0}};
    herd_page_t p = {.self = "S", .version = "v", .health = "ready", .reason = "r", .ready = true, .records = 42,
                     .servers = servers, .n_servers = 4, .links = links, .n_links = 4};
    size_t len = 0;
    char *html = herd_admin_page_render(&p, &len);
    assert_non_null(html);
    assert_int_equal(count(html, "<g class=\"server\""), 4);
    assert_int_equal(count(html, "<g class=\"link\""), 3); /* the one naming no server is left out */
    assert_non_null(strstr(html, "data-name=\"S\" data-state=\"ready\""));
    assert_non_null(strstr(html, "data-name=\"U\" data-state=\"link up\""));
    assert_non_null(strstr(html, "data-name=\"D\" data-state=\"link down\""));
    assert_non_null(strstr(html, "data-name=\"O\" data-state=\"unknown\""));
    assert_non_null(strstr(html, "data-a=\"U\" data-b=\"O\" data-state=\"unknown\""));
    assert_non_null(strstr(html, ">42</text>"));
    assert_non_null(strstr(html, "3.2 s ago"));
    assert_non_null(strstr(html, "75 s ago"));
    assert_non_null(strstr(html, "stroke-dasharray"));
    assert_non_null(strstr(html, "<meta http-equiv=\"refresh\""));
    free(html);
}

static void test_starting_page(void **state)
{
    (void)state;
    char *html = NULL;
    int n = herd_admin_page_starting("loading <x>", &html);
    assert_true(n > 0);
    assert_non_null(strstr(html, "starting</b>: loading &lt;x&gt;"));
    free(html);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_are_escaped),
        cmocka_unit_test(test_every_server_and_link_is_drawn),
        cmocka_unit_test(test_starting_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
