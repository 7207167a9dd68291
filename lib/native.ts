// Loads the compiled addon once per JS environment (main thread or worker) and hands it the
// XnormError class, so native failures arrive as real XnormError instances.
import * as fs from 'fs';
import * as path from 'path';
import { XnormError, fail } from './errors';

/** Native entry points take one options object; `async` selects the Promise form. */
export type NativeFn = (args: object, async?: boolean) => unknown;
export type NativeAddon = Record<string, NativeFn> & {
  setErrorClass(cls: typeof XnormError): void;
  info(): { threads: number; isaLevel: string; isa: string[]; isaWarning: string; napi: number; compiler: string };
};

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

let addon: NativeAddon | undefined;

export function native(): NativeAddon {
  if (addon) return addon;
  const root = packageRoot();
  let loaded: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('node-gyp-build')(root) as NativeAddon;
  } catch (e) {
    fail(
      'ERR_XNORM_NATIVE_LOAD',
      `could not load the xnorm native addon from ${root}: ${(e as Error).message}. ` +
        'Tried prebuilds/ and build/Release. Fix: reinstall with a prebuild for your platform, or build from ' +
        'source with `npm run build:native` (needs python3, make and a C++17 compiler).',
    );
  }
  loaded.setErrorClass(XnormError);
  addon = loaded;
  return loaded;
}
