/**
 * The end-of-run secrets scan (test/helpers/secrets.ts, run by the globalSetup teardown) is only
 * worth something if it finds what it looks for: a planted secret is found as written, URL-encoded
 * and JSON-escaped, in a log and in a SQLite store file; hashes of it are not hits.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqlite } from '../helpers/sqlite.js';
import { describe, expect, it } from 'vitest';
import { scanTargets, type SecretKind } from '../helpers/secrets.js';

describe('secrets scan', () => {
  it('finds planted plaintext in every encoding, in logs and SQLite stores, and ignores hashes', () => {
    const apiKey = `stk_dev_${randomBytes(6).toString('hex').toUpperCase()}_${randomBytes(14).toString('hex')}`;
    const dbUrl = `postgres://app:${'p@ss/' + randomBytes(6).toString('hex')}@db.example.com:5432/shop`;
    const token = `stks_${randomBytes(24).toString('base64url')}`;
    const password = `pa"ss\\${randomBytes(6).toString('hex')}`;
    const secrets: Array<{ kind: SecretKind; value: string }> = [
      { kind: 'api-key', value: apiKey },
      { kind: 'db-url', value: dbUrl },
      { kind: 'session-token', value: token },
      { kind: 'password', value: password },
    ];
    const clean = Buffer.from(
      [
        JSON.stringify({ level: 30, msg: 'request completed', keyHash: createHmac('sha256', 'pepper').update(apiKey).digest('hex') }),
        JSON.stringify({ level: 30, tokenHash: createHash('sha256').update(token).digest('hex'), url: 'postgres://app:****@db.example.com:5432/shop' }),
      ].join('\n'),
    );
    const plainLog = Buffer.from(`{"level":50,"msg":"oops ${apiKey}"}`);
    const urlEncoded = Buffer.from(`GET /x?u=${encodeURIComponent(dbUrl)}`);
    const jsonEscaped = Buffer.from(JSON.stringify({ level: 40, body: { password } }));

    // a SQLite store holding the token in a row
    const file = join(mkdtempSync(join(tmpdir(), 'stk-scan-')), 'hub.db');
    const db = openSqlite(file);
    db.exec('create table sessions (token text)');
    db.prepare('insert into sessions values (?)').run(token);
    db.close();

    const r = scanTargets(secrets, [
      { name: 'clean.log', data: clean },
      { name: 'plain.log', data: plainLog },
      { name: 'url.log', data: urlEncoded },
      { name: 'json.log', data: jsonEscaped },
      { name: 'hub.db', data: readFileSync(file) },
    ]);
    const hits = r.hits.map((h) => `${h.kind}@${h.file}:${h.encoding}`).sort();
    console.log(
      `secrets scan self-check: ${r.secrets} planted secrets × ${r.files} targets → ${r.hits.length} hits (${hits.join(', ')}); hashes and masked URLs: 0 hits`,
    );
    expect(hits).toEqual(['api-key@plain.log:plain', 'db-url@url.log:url-encoded', 'password@json.log:json-escaped', 'session-token@hub.db:plain'].sort());
    expect(r.hits.some((h) => h.file === 'clean.log')).toBe(false);
  });
});
