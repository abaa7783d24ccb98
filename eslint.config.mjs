// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

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
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Workflow code is replayed: it may import only the workflow SDK, type-only activity
    // declarations, and the pure domain modules. No Node built-ins, no I/O libraries.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Workflows must be deterministic: no Node built-ins.' })),
          patterns: [
            {
              regex: '^(?!@temporalio/workflow$|@temporalio/common$|\\.{1,2}/|\\.\\./src/domain/|\\.\\./activities$|\\.\\./activities/index$)',
              message: 'Workflows may import only @temporalio/workflow, @temporalio/common, pure src/domain modules and activity types.',
            },
            {
              group: ['../src/*', '!../src/domain', '../src/db/*', '../src/docker/*', '../src/temporal/*', '../src/cli/*', '../src/config', '../src/logger'],
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
          paths: nodeBuiltins.map((name) => ({ name, message: 'Domain modules are pure: no Node built-ins.' })),
          patterns: [
            {
              regex: '^(?!zod$|@temporalio/common$|\\./|\\.\\./\\.\\./contracts/)',
              message: 'Domain modules may import only zod, @temporalio/common, each other and the shipped contracts.',
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
    files: ['bin/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
