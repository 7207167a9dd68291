// Every public export carries JSDoc an editor can show: a summary, @param for each parameter (names as
// declared) and an @example; and every @example (those on public class members too) type-checks
// against the real API.
import * as path from 'path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..');
/** The package's entry points ('xnorm' and 'xnorm/tfjs') and how the examples file imports them. */
const ENTRIES = [
  { file: path.join(root, 'lib/index.ts'), specifier: '../lib/index' },
  { file: path.join(root, 'lib/tfjs/index.ts'), specifier: '../lib/tfjs/index' },
];
/** Where the generated examples file lives (in memory only; never written). */
const EXAMPLES_FILE = path.join(root, 'test', '__jsdoc_examples__.ts');
/** Imports every example may use besides the entries' exports. */
const EXTRA_IMPORTS = "import * as tf from '@tensorflow/tfjs-core';";

interface Export {
  name: string;
  entry: string;
  kind: 'function' | 'class' | 'value';
  doc: string;
  params: string[];
  paramTags: string[];
  examples: string[];
  memberExamples: { name: string; code: string }[];
}

function compilerOptions(): ts.CompilerOptions {
  const configFile = path.join(root, 'tsconfig.json');
  const { config, error } = ts.readConfigFile(configFile, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, root, undefined, configFile);
  return { ...parsed.options, noEmit: true };
}

/** Parameter names of a signature; a rest parameter of a labelled tuple type (defineOp's ops) gives its labels. */
function parameterNames(checker: ts.TypeChecker, sig: ts.Signature): string[] {
  const names: string[] = [];
  for (const p of sig.parameters) {
    const decl = p.valueDeclaration as ts.ParameterDeclaration | undefined;
    const type = checker.getTypeOfSymbol(p);
    const target = (type as ts.TypeReference).target as ts.TupleType | undefined;
    if (decl?.dotDotDotToken && target && target.objectFlags & ts.ObjectFlags.Tuple && target.labeledElementDeclarations) {
      for (const d of target.labeledElementDeclarations) if (d) names.push(d.name.getText());
    } else names.push(p.name);
  }
  return names;
}

function collectExports(program: ts.Program): Export[] {
  const checker = program.getTypeChecker();
  const out: Export[] = [];
  for (const entry of ENTRIES) {
    const sf = program.getSourceFile(entry.file);
    if (!sf) throw new Error(`no source file ${entry.file}`);
    for (const exp of checker.getExportsOfModule(checker.getSymbolAtLocation(sf)!)) {
      const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp;
      if (!(sym.flags & ts.SymbolFlags.Value)) continue;
      const tags = sym.getJsDocTags(checker);
      const sigs = sym.flags & ts.SymbolFlags.Class ? [] : checker.getTypeOfSymbol(sym).getCallSignatures();
      out.push({
        name: exp.name,
        entry: entry.specifier,
        kind: sym.flags & ts.SymbolFlags.Class ? 'class' : sigs.length ? 'function' : 'value',
        doc: ts.displayPartsToString(sym.getDocumentationComment(checker)).trim(),
        params: sigs.length ? parameterNames(checker, sigs[0]) : [],
        paramTags: tags.filter((t) => t.name === 'param').map((t) => (t.text?.find((p) => p.kind === 'parameterName')?.text ?? text(t).split(/\s/)[0])),
        examples: examplesOf(tags),
        memberExamples: sym.flags & ts.SymbolFlags.Class ? memberExamples(checker, sym) : [],
      });
    }
  }
  return out;
}

const text = (t: ts.JSDocTagInfo) => ts.displayPartsToString(t.text);
const examplesOf = (tags: ts.JSDocTagInfo[]) =>
  tags.filter((t) => t.name === 'example').map((t) => text(t).replace(/^\s*```\w*\n?|\n?```\s*$/g, ''));

/** The @examples on a class's public members (instance and static), by member name. */
function memberExamples(checker: ts.TypeChecker, cls: ts.Symbol): { name: string; code: string }[] {
  const members = [...(cls.members?.values() ?? []), ...(cls.exports?.values() ?? [])];
  return members.flatMap((m) => {
    const tags = m.getJsDocTags(checker);
    if (tags.some((t) => t.name === 'internal')) return [];
    return examplesOf(tags).map((code) => ({ name: `${cls.name}.${m.name}`, code }));
  });
}

/** One async function per example, so that top-level await and repeated names are fine. */
function examplesSource(exports: Export[]): { source: string; owner: (line: number) => string } {
  const lines: string[] = [EXTRA_IMPORTS];
  for (const entry of ENTRIES) {
    const names = exports.filter((e) => e.entry === entry.specifier).map((e) => e.name);
    lines.push(`import { ${names.join(', ')} } from '${entry.specifier}';`);
  }
  const owners: { from: number; name: string }[] = [];
  const all = exports.flatMap((e) => [...e.examples.map((code) => ({ name: e.name, code })), ...e.memberExamples]);
  all.forEach(({ name, code }, i) => {
    owners.push({ from: lines.length, name: `${name} (@example)` });
    lines.push(`export async function example_${i}(): Promise<void> {`, ...code.split('\n'), '}');
  });
  const owner = (line: number) => [...owners].reverse().find((o) => o.from <= line)?.name ?? 'imports';
  return { source: lines.join('\n') + '\n', owner };
}

const options = compilerOptions();
const program = ts.createProgram(
  ENTRIES.map((e) => e.file),
  options,
);
const exported = collectExports(program);

describe('JSDoc of the public API', () => {
  it('finds the exports', () => {
    expect(exported.length).toBeGreaterThan(50);
    for (const name of ['moments', 'convBn', 'Tensor', 'XnormError', 'BACKEND_NAME']) expect(exported.map((e) => e.name)).toContain(name);
  });

  it('every export has a summary, an @example, and @param for each parameter by its declared name', () => {
    const problems: string[] = [];
    for (const e of exported) {
      if (!e.doc) problems.push(`${e.name}: no summary`);
      if (!e.examples.some((x) => x.trim())) problems.push(`${e.name}: no @example`);
      const missing = e.params.filter((p) => !e.paramTags.includes(p));
      if (missing.length) problems.push(`${e.name}: no @param for ${missing.join(', ')}`);
      const unknown = e.paramTags.filter((p) => !e.params.includes(p));
      if (e.kind === 'function' && unknown.length) problems.push(`${e.name}: @param for no declared parameter: ${unknown.join(', ')}`);
    }
    expect(problems).toEqual([]);
  });

  it('every @example type-checks (exports and public class members)', () => {
    const { source, owner } = examplesSource(exported);
    const host = ts.createCompilerHost(options);
    const { getSourceFile, fileExists, readFile } = host;
    host.getSourceFile = (file, lang, ...rest) =>
      path.resolve(file) === EXAMPLES_FILE ? ts.createSourceFile(file, source, lang) : getSourceFile.call(host, file, lang, ...rest);
    host.fileExists = (file) => path.resolve(file) === EXAMPLES_FILE || fileExists.call(host, file);
    host.readFile = (file) => (path.resolve(file) === EXAMPLES_FILE ? source : readFile.call(host, file));
    const withExamples = ts.createProgram([...ENTRIES.map((e) => e.file), EXAMPLES_FILE], options, host, program);
    const sf = withExamples.getSourceFile(EXAMPLES_FILE)!;
    const diagnostics = [...withExamples.getSyntacticDiagnostics(sf), ...withExamples.getSemanticDiagnostics(sf)].map((d) => {
      const line = d.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(d.start).line;
      return `${owner(line)}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}\n    ${source.split('\n')[line]}`;
    });
    expect(diagnostics).toEqual([]);
  });
});
