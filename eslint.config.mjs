// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';
import globals from 'globals';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

/**
 * The folders of ARCHITECTURE §2 depend one way: workflows/, activities/ and bridge/ build on src/,
 * never the reverse, and never on each other (workflows see activities only as types). An import
 * of one of `folders` from a file of another top-level folder is an error.
 */
const forbidFolders = (folders, message) => ({
  regex: `^(\\.\\./)+(${folders.join('|')})(/|$)`,
  message,
});
const SRC_LAYER =
  'src/ holds the domain and the adapters: it never imports activities/, bridge/ or workflows/. Only the process entry points wire them: src/cli (the bridge) and src/temporal/case-worker.ts (the activities).';

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.*/**', 'test/histories/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test's test()/describe() return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The built-in runtimes' Node code runs inside their images (Node 18, CommonJS, no build step).
    files: ['scripts/runtimes/**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli/**', 'src/temporal/case-worker.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [forbidFolders(['activities', 'bridge', 'workflows'], SRC_LAYER)] },
      ],
    },
  },
  {
    files: ['src/cli/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [forbidFolders(['activities', 'workflows'], SRC_LAYER)] },
      ],
    },
  },
  {
    files: ['src/temporal/case-worker.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [forbidFolders(['bridge', 'workflows'], SRC_LAYER)] }],
    },
  },
  {
    files: ['activities/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            forbidFolders(
              ['bridge', 'workflows'],
              'Activities build on src/ only: never on bridge/ or workflows/.',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['bridge/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            forbidFolders(
              ['activities', 'workflows'],
              'The bridge builds on src/ only: never on activities/ or workflows/.',
            ),
          ],
        },
      ],
    },
  },
  {
    // Workflow code is replayed: it may import only the workflow SDK, type-only activity
    // declarations, and the pure domain modules. No Node built-ins, no I/O libraries.
    files: ['workflows/**/*.ts'],
    rules: {
      // typescript-eslint's variant: it tells `import type` apart.
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Workflows must be deterministic: no Node built-ins.',
          })),
          patterns: [
            {
              regex:
                '^(?!@temporalio/workflow$|@temporalio/common$|\\.{1,2}/|\\.\\./src/domain/|\\.\\./activities$|\\.\\./activities/index$)',
              message:
                'Workflows may import only @temporalio/workflow, @temporalio/common, pure src/domain modules and activity types.',
            },
            {
              regex: '^\\.\\./activities(/|$)',
              allowTypeImports: true,
              message:
                'Workflows see activities only as types (import type …): the activity code never enters the workflow bundle.',
            },
            {
              group: [
                '../src/*',
                '!../src/domain',
                '../src/db/*',
                '../src/docker/*',
                '../src/temporal/*',
                '../src/cli/*',
                '../src/config',
                '../src/logger',
              ],
              message: 'Only pure src/domain modules may be imported into workflows.',
            },
          ],
        },
      ],
      'no-restricted-globals': ['error', 'process', 'require', 'setImmediate'],
    },
  },
  {
    // Domain modules are imported by workflows, so they must be pure as well.
    files: ['src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Domain modules are pure: no Node built-ins.',
          })),
          patterns: [
            {
              regex: '^(?!zod$|@temporalio/common$|\\./|\\.\\./\\.\\./contracts/)',
              message:
                'Domain modules may import only zod, @temporalio/common, each other and the shipped contracts.',
            },
          ],
        },
      ],
      'no-restricted-globals': ['error', 'process', 'require', 'setImmediate'],
    },
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The CommonJS entry point that registers tsx and loads the TypeScript CLI.
    // The decode worker threads' entry (src/otel/otlp-decode-pool.ts) does the same per thread.
    files: ['bin/*.js', 'src/otel/otlp-decode-worker.js'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
