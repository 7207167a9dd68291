// Loads the compiled addon once per JS environment (main thread or worker) and hands it the
// XnormError class, so native failures arrive as real XnormError instances.
//
// Where it looks, in order: $XNORM_ADDON (an explicit file, and then nothing else), the prebuild for
// this platform (prebuilds/<platform>-<arch>/), then a local build (build/Release, build/Debug).
import * as fs from 'fs';
import * as path from 'path';
import { markAsUntransferable } from 'worker_threads';
import { debugEnabled, debugLog } from './debug';
import { XnormError, fail } from './errors';
import type { NativeAddon } from './native-api';

export type * from './native-api';

/** The package root: the nearest folder above this file whose package.json names xnorm. */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'xnorm') return dir;
      } catch {
        // not ours: keep looking upwards
      }
    }
    const up = path.dirname(dir);
    if (up === dir) fail('ERR_XNORM_NATIVE_LOAD', `cannot find the xnorm package root above ${__dirname}`);
    dir = up;
  }
}

function libc(): 'glibc' | 'musl' {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/** The files to try, best first. */
export function addonCandidates(root: string, env: Record<string, string | undefined> = process.env): string[] {
  if (env.XNORM_ADDON) return [path.resolve(env.XNORM_ADDON)];
  const tuple = `${process.platform}-${process.arch}`;
  const dir = path.join(root, 'prebuilds', tuple);
  let prebuilds: string[] = [];
  try {
    const lc = process.platform === 'linux' ? libc() : '';
    prebuilds = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.node'))
      .filter((f) => !lc || !/glibc|musl/.test(f) || f.includes(lc))
      .map((f) => path.join(dir, f));
  } catch {
    prebuilds = [path.join(dir, '<no prebuilds for this platform>')];
  }
  return [...prebuilds, path.join(root, 'build', 'Release', 'xnorm.node'), path.join(root, 'build', 'Debug', 'xnorm.node')];
}

/** The platforms a published xnorm ships prebuilt binaries for. */
export const prebuiltPlatforms = ['linux-x64', 'linux-arm64'];

/** Tries each candidate; on total failure the error lists every try, why it failed, and how to fix it. */
export function loadAddon(candidates: string[], tuple = `${process.platform}-${process.arch}`): { addon: NativeAddon; file: string } {
  const tries: string[] = [];
  for (const file of candidates) {
    if (!fs.existsSync(file)) {
      tries.push(`  - ${file}: not found`);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return { addon: require(file) as NativeAddon, file };
    } catch (e) {
      tries.push(`  - ${file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  return fail(
    'ERR_XNORM_NATIVE_LOAD',
    [
      `could not load the xnorm native addon for ${tuple}, Node ${process.version} (N-API 8 needed).`,
      'Tried:',
      ...tries,
      prebuiltPlatforms.includes(tuple)
        ? `A prebuilt binary for ${tuple} (glibc 2.17 or newer) ships in the package: reinstall it (npm install xnorm), or, on musl (Alpine) or an older glibc, build from source as below.`
        : `No prebuilt binary exists for ${tuple} (prebuilt: ${prebuiltPlatforms.join(', ')}, glibc 2.17 or newer): build from source as below.`,
      'To build from source (needs python3, make and a C++17 compiler): xnorm\'s install script compiles it, so it must be allowed to run.',
      '  - npm 11 with allowScripts / strict-allow-scripts, or after an install with --ignore-scripts: npm install-scripts approve xnorm, then npm rebuild xnorm',
      '  - pnpm 10 (build scripts off by default): pnpm approve-builds, then pnpm rebuild xnorm',
      '  - yarn (enableScripts: false): allow it in .yarnrc.yml, then yarn rebuild xnorm',
      '  - unset XNORM_ADDON if it points at a file that is not the xnorm addon',
    ].join('\n'),
  );
}

let addon: NativeAddon | undefined;
let addonFile: string | undefined;

export function native(): NativeAddon {
  if (addon) return addon;
  const { addon: loaded, file } = loadAddon(addonCandidates(packageRoot()));
  loaded.setup(XnormError, markAsUntransferable);
  addon = loaded;
  addonFile = file;
  if (debugEnabled()) {
    const i = loaded.info();
    debugLog(`addon loaded: ${file}; ISA ${i.isaLevel} (${i.isa.join(', ')})${i.isaWarning ? `: ${i.isaWarning}` : ''}; ${i.threads} threads`);
  }
  return loaded;
}

/** The addon file this environment loaded (loads it if needed). */
export function loadedAddonFile(): string {
  native();
  return addonFile!;
}
