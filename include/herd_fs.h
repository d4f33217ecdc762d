/* herd_fs: small file-system helpers shared by the log and the durable
 * state. */
#ifndef HERD_FS_H
#define HERD_FS_H

/* Makes every missing folder on the way to `dir`, like mkdir -p (mode 0755
 * before the umask). Returns 0, or -1 with errno set. */
int herd_mkdirs(const char *dir);

#endif
