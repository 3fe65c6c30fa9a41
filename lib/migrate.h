/*
 * migrate.h - the schema migrations compiled into every binary
 * (generated from sql/NNN_name.sql by sql/embed.sh), applied by
 * wh_db_migrate in version order.
 */
#ifndef WH_MIGRATE_H
#define WH_MIGRATE_H

#include <stddef.h>

typedef struct {
    int version;
    const char *name;
    const char *sql;
} wh_migration;

extern const wh_migration wh_migrations[];
extern const size_t wh_migrations_count;

#endif
