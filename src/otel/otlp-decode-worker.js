'use strict';
// Worker threads do not inherit the main thread's tsx registration (bin/benchctl.js registers it
// in-process, not through --import): each decode worker registers it before loading its task.
require('tsx/cjs/api').register();
module.exports = require('./otlp-decode-worker.ts');
