import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { XnormError } from '../lib';
import { addonCandidates, loadAddon, packageRoot } from '../lib/native';

describe('native loader', () => {
  it('looks for the prebuild first, then the local builds', () => {
    const c = addonCandidates(packageRoot(), {});
    expect(c[0]).toContain(path.join('prebuilds', `${process.platform}-${process.arch}`));
    expect(c.slice(-2)).toEqual([
      path.join(packageRoot(), 'build', 'Release', 'xnorm.node'),
      path.join(packageRoot(), 'build', 'Debug', 'xnorm.node'),
    ]);
  });

  it('XNORM_ADDON names the one file to load', () => {
    expect(addonCandidates(packageRoot(), { XNORM_ADDON: '/opt/x.node' })).toEqual(['/opt/x.node']);
  });

  it('explains every failed try and how to fix it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xnorm-loader-'));
    const broken = path.join(dir, 'broken.node');
    fs.writeFileSync(broken, 'not a shared library');
    try {
      loadAddon([path.join(dir, 'missing.node'), broken]);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(XnormError);
      const err = e as XnormError;
      expect(err.code).toBe('ERR_XNORM_NATIVE_LOAD');
      expect(err.message).toContain(`${path.join(dir, 'missing.node')}: not found`);
      expect(err.message).toMatch(new RegExp(`${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*(invalid ELF|too short|file)`));
      // npm 11's own advice for a package whose install script is not yet allowed, then the rebuild
      expect(err.message).toContain('npm install-scripts approve xnorm, then npm rebuild xnorm');
      expect(err.message).toContain('pnpm approve-builds, then pnpm rebuild xnorm');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says whether a prebuilt binary exists for the platform', () => {
    const message = (tuple: string) => {
      try {
        loadAddon([], tuple);
      } catch (e) {
        return (e as XnormError).message;
      }
      return expect.unreachable();
    };
    expect(message('linux-arm64')).toMatch(/A prebuilt binary for linux-arm64 .* ships in the package/);
    expect(message('darwin-arm64')).toMatch(/No prebuilt binary exists for darwin-arm64 \(prebuilt: linux-x64, linux-arm64/);
  });

  it('loads a working build', () => {
    const { addon, file } = loadAddon(addonCandidates(packageRoot(), {}));
    expect(typeof addon.moments).toBe('function');
    expect(fs.existsSync(file)).toBe(true);
  });
});
