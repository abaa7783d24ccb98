#!/usr/bin/env node
'use strict';
// benchctl runs from the TypeScript sources: tsx compiles on load (no separate build step).
require('tsx/cjs/api').register();
require('../src/cli/benchctl.ts');
