/* Unit tests for herd_list: appending, unlinking at the head, the middle
 * and the tail, unlinking twice, and a struct on two lists at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "herd_list.h"

typedef struct {
    int id;
    herd_list_node_t a; /* on list A */
    herd_list_node_t b; /* on list B */
} item_t;

/* Checks that l holds exactly the ids in want, both ways round. */
static void expect_order(const herd_list_t *l, const int *want, size_t n)
{
    size_t i = 0;
    for (herd_list_node_t *p = l->head; p; p = p->next, i++) {
        assert_true(i < n);
        assert_int_equal(HERD_LIST_ENTRY(p, item_t, a)->id, want[i]);
    }
    assert_int_equal(i, n);
    for (herd_list_node_t *p = l->tail; p; p = p->prev) {
        assert_true(i > 0);
        assert_int_equal(HERD_LIST_ENTRY(p, item_t, a)->id, want[--i]);
    }
    assert_int_equal(i, 0);
}

static void test_push_remove(void **state)
{
    (void)state;
    item_t v[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    herd_list_t l = {0};
    assert_null(HERD_LIST_ENTRY(l.head, item_t, a));
    for (int i = 0; i < 4; i++)
        herd_list_push(&l, &v[i].a);
    expect_order(&l, (int[]){0, 1, 2, 3}, 4);
    herd_list_remove(&l, &v[2].a); /* middle */
    expect_order(&l, (int[]){0, 1, 3}, 3);
    herd_list_remove(&l, &v[0].a); /* head */
    expect_order(&l, (int[]){1, 3}, 2);
    herd_list_remove(&l, &v[3].a); /* tail */
    expect_order(&l, (int[]){1}, 1);
    herd_list_remove(&l, &v[3].a); /* again: nothing changes */
    expect_order(&l, (int[]){1}, 1);
    herd_list_push(&l, &v[2].a); /* a removed node can join again */
    expect_order(&l, (int[]){1, 2}, 2);
    herd_list_remove(&l, &v[1].a);
    herd_list_remove(&l, &v[2].a);
    assert_null(l.head);
    assert_null(l.tail);
}

static void test_two_lists(void **state)
{
    (void)state;
    item_t v[3] = {{.id = 0}, {.id = 1}, {.id = 2}};
    herd_list_t la = {0}, lb = {0};
    for (int i = 0; i < 3; i++) {
        herd_list_push(&la, &v[i].a);
        herd_list_push(&lb, &v[2 - i].b);
    }
    herd_list_remove(&lb, &v[1].b);
    expect_order(&la, (int[]){0, 1, 2}, 3);
    assert_int_equal(HERD_LIST_ENTRY(lb.head, item_t, b)->id, 2);
    assert_int_equal(HERD_LIST_ENTRY(lb.tail, item_t, b)->id, 0);
    assert_ptr_equal(lb.head->next, lb.tail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_remove),
        cmocka_unit_test(test_two_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
