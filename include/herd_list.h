/* herd_list: an intrusive doubly linked list, oldest first.
 *
 * The struct that takes part holds a herd_list_node_t; the list holds its
 * first and last node, so appending and unlinking cost O(1) and nothing is
 * allocated. HERD_LIST_ENTRY turns a node back into its struct. A node
 * belongs to at most one list at a time through one member; a struct on
 * two lists holds two members. Not thread-safe: a list is used by the
 * thread that owns it. */
#ifndef HERD_LIST_H
#define HERD_LIST_H

#include <stddef.h>

typedef struct herd_list_node_t {
    struct herd_list_node_t *prev; /* towards the head, NULL at the head */
    struct herd_list_node_t *next; /* towards the tail, NULL at the tail */
} herd_list_node_t;

typedef struct {
    herd_list_node_t *head; /* first appended, NULL when empty */
    herd_list_node_t *tail; /* last appended */
} herd_list_t;

/* The struct of type `type` whose member `member` is node, or NULL for a
 * NULL node. */
#define HERD_LIST_ENTRY(node, type, member)                                                                   \
    ((node) ? (type *)(void *)((char *)(node) - offsetof(type, member)) : (type *)NULL)

/* Appends n (on no list) at the tail of l. */
static inline void herd_list_push(herd_list_t *l, herd_list_node_t *n)
{
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

/* Unlinks n from l. A node on no list (both links NULL and not l's only
 * node) is left as it is, so that unlinking twice is harmless. */
static inline void herd_list_remove(herd_list_t *l, herd_list_node_t *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else if (l->head == n)
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else if (l->tail == n)
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

#endif
