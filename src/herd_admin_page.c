/* herd_admin_page: the admin endpoint's page at `/`. See herd_admin_page.h. */
#define _GNU_SOURCE /* open_memstream */
#include "herd_admin_page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 640      /* the drawing is SIZE x SIZE user units */
#define RING 220      /* radius of the circle the servers sit on */
#define NODE_R 40     /* radius of a server's disc */

#define GREEN "#2e8b57"
#define RED "#c62828"
#define GREY "#9aa0a6"

/* Writes s HTML-escaped (for text and attribute values alike). */
static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        const char *e = *s == '&'    ? "&amp;"
                        : *s == '<'  ? "&lt;"
                        : *s == '>'  ? "&gt;"
                        : *s == '"'  ? "&quot;"
                        : *s == '\'' ? "&#39;"
                                     : NULL;
        if (e)
            fputs(e, f);
        else
            fputc(*s, f);
    }
}

/* The document's head and style: shared by both pages. */
static void head(FILE *f, const char *title_prefix, const char *title)
{
    fprintf(f,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"refresh\" content=\"%d\">\n<title>%s",
            HERD_PAGE_REFRESH_S, title_prefix);
    esc(f, title);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:1.5em;color:#202124}\n"
          "h1{font-size:1.4em;margin:0 0 .3em}\n"
          ".ok{color:" GREEN "}.bad{color:" RED "}.unknown{color:" GREY "}\n"
          "table{border-collapse:collapse;margin-top:1em}\n"
          "td,th{border:1px solid #dadce0;padding:.25em .7em;text-align:left}\n"
          "svg text{font-family:sans-serif;paint-order:stroke;stroke:#fff;stroke-width:3px}\n"
          "footer{margin-top:1em;font-size:.85em;color:#5f6368}\n"
          "</style>\n</head>\n<body>\n",
          f);
}

/* "0.4 s", "12 s", "3 min", "5 h" */
static void age(FILE *f, double s)
{
    if (s < 10)
        fprintf(f, "%.1f s", s < 0 ? 0 : s);
    else if (s < 120)
        fprintf(f, "%.0f s", s);
    else if (s < 7200)
        fprintf(f, "%.0f min", s / 60);
    else
        fprintf(f, "%.0f h", s / 3600);
}

#define PI 3.14159265358979323846

/* cos and sin of t in [-PI, PI] by their series, to far below a pixel:
 * the server is not linked with libm for one drawing. */
static void cos_sin(double t, double *c, double *s)
{
    double term_c = 1, term_s = t;
    *c = 0;
    *s = 0;
    for (int k = 0; k < 30; k++) {
        *c += term_c;
        *s += term_s;
        term_c *= -t * t / ((2.0 * k + 1) * (2.0 * k + 2));
        term_s *= -t * t / ((2.0 * k + 2) * (2.0 * k + 3));
    }
}

/* Where server i of n sits: on a circle, the first at the top, clockwise;
 * a lone server in the middle. */
static void place(size_t i, size_t n, double *x, double *y)
{
    double angle = n ? 2 * PI * (double)i / (double)n - PI / 2 : 0; /* in [-PI/2, 3 PI/2) */
    if (angle > PI)
        angle -= 2 * PI;
    double r = n > 1 ? RING : 0, c, s;
    cos_sin(angle, &c, &s);
    *x = SIZE / 2.0 + r * c;
    *y = SIZE / 2.0 + r * s;
}

static const char *link_state(int up)
{
    return up > 0 ? "up" : up == 0 ? "down" : "unknown";
}

static void draw_link(FILE *f, const herd_page_t *p, const herd_page_link_t *l)
{
    double x1, y1, x2, y2;
    place(l->a, p->n_servers, &x1, &y1);
    place(l->b, p->n_servers, &x2, &y2);
    const char *colour = l->up > 0 ? GREEN : l->up == 0 ? RED : GREY;
    fprintf(f, "<g class=\"link\" data-a=\"");
    esc(f, p->servers[l->a].name);
    fprintf(f, "\" data-b=\"");
    esc(f, p->servers[l->b].name);
    fprintf(f, "\" data-state=\"%s\">\n<title>", link_state(l->up));
    esc(f, p->servers[l->a].name);
    fputs(" - ", f);
    esc(f, p->servers[l->b].name);
    fprintf(f, ": %s</title>\n", l->up < 0 ? "not a link of this server" : link_state(l->up));
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%d\"%s/>\n", x1,
            y1, x2, y2, colour, l->up < 0 ? 2 : 4, l->up == 0 ? " stroke-dasharray=\"10 6\"" : "");
    if (l->up >= 0) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" fill=\"%s\">%s", (x1 + x2) / 2,
                (y1 + y2) / 2 + 4, colour, link_state(l->up));
        if (l->age_s >= 0) {
            fputs(" \xc2\xb7 ", f); /* a middle dot */
            age(f, l->age_s);
        }
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
}

static void draw_server(FILE *f, const herd_page_t *p, size_t i)
{
    const herd_page_server_t *s = &p->servers[i];
    double x, y;
    place(i, p->n_servers, &x, &y);
    const char *state, *fill, *stroke;
    if (s->self) {
        state = p->health;
        fill = p->ready ? "#d7f0de" : "#fbe0de";
        stroke = p->ready ? GREEN : RED;
    } else if (s->link >= 0) {
        state = s->link ? "link up" : "link down";
        fill = s->link ? "#d7f0de" : "#fbe0de";
        stroke = s->link ? GREEN : RED;
    } else {
        state = "unknown";
        fill = "#f1f3f4";
        stroke = GREY;
    }
    fputs("<g class=\"server\" data-name=\"", f);
    esc(f, s->name);
    fputs("\" data-state=\"", f);
    esc(f, state);
    fputs("\">\n<title>", f);
    esc(f, s->name);
    fputs(": ", f);
    if (s->self) {
        esc(f, p->health);
        fputs(": ", f);
        esc(f, p->reason);
    } else {
        esc(f, s->link < 0 ? "not a neighbour: its state is not known here" : state);
    }
    fprintf(f, "</title>\n<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\" stroke=\"%s\" stroke-width=\"%d\"/>\n",
            x, y, NODE_R, fill, stroke, s->self ? 5 : 2);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">", x,
            y + NODE_R + 18);
    esc(f, s->name);
    fputs("</text>\n", f);
    if (s->self) {
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">%zu</text>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">records</text>\n",
                x, y - 8, p->records, x, y + 6);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\" fill=\"%s\">", x, y + 20,
                stroke);
        esc(f, p->health);
        fputs("</text>\n", f);
    } else {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\" fill=\"%s\">%s</text>\n", x,
                y + 4, stroke, s->link < 0 ? "?" : s->link ? "link up" : "link down");
    }
    fputs("</g>\n", f);
}

char *herd_admin_page_render(const herd_page_t *p, size_t *len)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f)
        return NULL;
    head(f, "herd: ", p->self);
    fputs("<h1>herd as ", f);
    esc(f, p->self);
    fputs(" sees it</h1>\n<p class=\"status\"><b class=\"", f);
    fputs(p->ready ? "ok" : "bad", f);
    fputs("\">", f);
    esc(f, p->health);
    fputs("</b>: ", f);
    esc(f, p->reason);
    fprintf(f, " &middot; %zu records &middot; %zu client connections &middot; herd-server ", p->records,
            p->connections);
    esc(f, p->version);
    fputs("</p>\n", f);

    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
            "aria-label=\"servers and links\">\n",
            SIZE, SIZE, SIZE, SIZE);
    for (size_t i = 0; i < p->n_links; i++)
        if (p->links[i].a < p->n_servers && p->links[i].b < p->n_servers)
            draw_link(f, p, &p->links[i]);
    for (size_t i = 0; i < p->n_servers; i++)
        draw_server(f, p, i);
    fputs("</svg>\n", f);

    /* The same facts as a table: for reading, copying, and text browsers. */
    fputs("<table class=\"links\">\n<tr><th>neighbour</th><th>link</th><th>last successful exchange</th></tr>\n", f);
    size_t own = 0;
    for (size_t i = 0; i < p->n_links; i++) {
        const herd_page_link_t *l = &p->links[i];
        if (l->up < 0 || l->a >= p->n_servers || l->b >= p->n_servers)
            continue;
        const char *other = p->servers[l->a].self ? p->servers[l->b].name : p->servers[l->a].name;
        own++;
        fputs("<tr data-peer=\"", f);
        esc(f, other);
        fprintf(f, "\" data-state=\"%s\"><td>", link_state(l->up));
        esc(f, other);
        fprintf(f, "</td><td class=\"%s\">%s</td><td>", l->up ? "ok" : "bad", link_state(l->up));
        if (l->age_s >= 0) {
            age(f, l->age_s);
            fputs(" ago", f);
        } else {
            fputs(l->age_s == HERD_PAGE_NEVER ? "none yet" : "not measured", f);
        }
        fputs("</td></tr>\n", f);
    }
    if (!own)
        fputs("<tr><td colspan=\"3\">no neighbour in the topology</td></tr>\n", f);
    fputs("</table>\n", f);
    fprintf(f,
            "<footer>Green: up (this server's own links and neighbours); red, dashed: down; grey: links and "
            "servers it cannot see. Refreshes every %d s. "
            "<a href=\"/metrics\">/metrics</a> &middot; <a href=\"/readyz\">/readyz</a> &middot; "
            "<a href=\"/livez\">/livez</a> &middot; <a href=\"/config\">/config</a></footer>\n</body>\n</html>\n",
            HERD_PAGE_REFRESH_S);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    *len = n;
    return text;
}

int herd_admin_page_starting(const char *progress, char **out)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f)
        return -1;
    head(f, "herd: ", "starting");
    fputs("<h1>herd server starting</h1>\n<p class=\"status\"><b class=\"bad\">starting</b>: ", f);
    esc(f, progress);
    fputs("</p>\n<footer><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/readyz\">/readyz</a></footer>\n"
          "</body>\n</html>\n",
          f);
    if (fclose(f) != 0) {
        free(text);
        return -1;
    }
    *out = text;
    return (int)n;
}
