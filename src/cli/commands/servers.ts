import type { Command } from 'commander';
import { CliError, UsageError } from '../errors.js';
import { success, warn } from '../output.js';
import { example, opts } from './common.js';
import { getPassword } from '../prompt.js';

export function registerServerCommands(program: Command): void {
  const hub = program.command('hub').description('run or administer the Hub (control plane)');
  example(
    hub.command('start').description('start the Hub (config from STK_HUB_PORT, STK_HUB_DB_URL, STK_SECRET_KEY, STK_SERVICE_TOKEN)'),
    'STK_SECRET_KEY=$(openssl rand -hex 32) STK_SERVICE_TOKEN=$(openssl rand -hex 24) stk hub start',
  ).action(async () => {
    const { startHub } = await import('../../hub/main.js');
    const { loadHubConfig, ConfigError } = await import('../../hub/config.js');
    const { existsSync } = await import('node:fs');
    if (!process.env.STK_HUB_DB_URL && existsSync('.santokit/hub.db') && !existsSync('.santokit-hub/hub.db')) {
      warn(
        "creating a new store in .santokit-hub/: .santokit/hub.db is the dev stack's store (earlier versions also used it for `stk hub start`); to open it, set STK_HUB_DB_URL=sqlite://./.santokit/hub.db and its STK_SECRET_KEY",
      );
    }
    let h;
    try {
      h = await startHub(loadHubConfig());
    } catch (e) {
      // bad settings, or a store created under another STK_SECRET_KEY
      if (e instanceof ConfigError) throw new CliError(e.message);
      throw e;
    }
    onSignals(() => h.stop());
  });

  example(
    hub
      .command('create-owner')
      .description('create an owner operator directly in the Hub store (when none exists yet)')
      .requiredOption('--email <email>', 'owner email')
      .option('--password-stdin', 'read the password from stdin'),
    'echo "$OWNER_PASSWORD" | stk hub create-owner --email ops@example.com --password-stdin',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ email: string; passwordStdin?: boolean }>(cmd);
    const password = await getPassword(o.passwordStdin, 'New owner password: ');
    const { loadHubConfig, ConfigError } = await import('../../hub/config.js');
    const { openStore, migrate } = await import('../../hub/store/store.js');
    const { createContext } = await import('../../hub/context.js');
    const { createOwner } = await import('../../hub/services/auth.js');
    const { AppError } = await import('../../protocol/errors.js');
    const { checkStoreKey } = await import('../../hub/services/store-key.js');
    let cfg;
    try {
      cfg = loadHubConfig();
    } catch (e) {
      if (e instanceof ConfigError) throw new CliError(e.message);
      throw e;
    }
    const store = await openStore(cfg.dbUrl, { poolMax: cfg.dbPoolMax });
    try {
      await migrate(store);
      const { default: pino } = await import('pino');
      const ctx = createContext(cfg, store, pino({ level: 'silent' }) as never);
      await checkStoreKey(ctx).catch((e: unknown) => {
        if (e instanceof ConfigError) throw new CliError(e.message);
        throw e;
      });
      const op = await createOwner(ctx, o.email, password).catch((e) => {
        if (e instanceof AppError) throw new CliError(`${e.message} (${e.status} ${e.code})`);
        throw e;
      });
      success(`Created owner ${op.email}`);
    } finally {
      await store.close();
    }
  });

  const bridge = program.command('bridge').description('run the Bridge (data plane)');
  example(
    bridge.command('start').description('start the Bridge (config from STK_BRIDGE_PORT, STK_HUB_URL, STK_SERVICE_TOKEN)'),
    'STK_HUB_URL=http://127.0.0.1:4000 STK_SERVICE_TOKEN=… stk bridge start',
  ).action(async () => {
    const { startBridge } = await import('../../bridge/main.js');
    const { loadBridgeConfig } = await import('../../bridge/config.js');
    let cfg;
    try {
      cfg = loadBridgeConfig();
    } catch (e) {
      throw new CliError((e as Error).message);
    }
    const b = await startBridge(cfg);
    onSignals(() => b.stop());
  });

  example(
    program
      .command('dev')
      .description('run Hub + Bridge + an embedded PostgreSQL for local development (data under .santokit/)')
      .option('--hub-port <port>', 'Hub port (env STK_HUB_PORT; default 4000)')
      .option('--bridge-port <port>', 'Bridge port (env STK_BRIDGE_PORT; default 3000)')
      .option('--pg-port <port>', 'embedded PostgreSQL port (env STK_DEV_PG_PORT; default 54329)')
      .option('--data-dir <dir>', 'where everything is kept (env STK_DATA_DIR; default .santokit)')
      .addHelpText('after', '\nPort 0 picks a free port. `npm start` runs `stk dev`; `npx stk status` shows the running stack.'),
    'stk dev',
    'stk dev --hub-port 4100 --bridge-port 3100 --pg-port 54400',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ hubPort?: string; bridgePort?: string; pgPort?: string; dataDir?: string }>(cmd);
    const env = { ...process.env };
    for (const [flag, v] of [
      ['--hub-port', o.hubPort],
      ['--bridge-port', o.bridgePort],
      ['--pg-port', o.pgPort],
    ] as const) {
      if (v !== undefined && !(/^\d{1,5}$/.test(v) && Number(v) <= 65535))
        throw new UsageError(`invalid ${flag} ${JSON.stringify(v)}: a port number (0-65535)`);
    }
    // flags win over the environment
    if (o.hubPort !== undefined) env.STK_HUB_PORT = o.hubPort;
    if (o.bridgePort !== undefined) env.STK_BRIDGE_PORT = o.bridgePort;
    if (o.pgPort !== undefined) env.STK_DEV_PG_PORT = o.pgPort;
    if (o.dataDir !== undefined) env.STK_DATA_DIR = o.dataDir;
    const { runDev } = await import('../../dev/index.js');
    await runDev(env);
  });
}

export function onSignals(stop: () => Promise<unknown>): void {
  let stopping = false;
  const handler = () => {
    if (stopping) process.exit(1);
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
