module.exports = require('../../jest.config.cjs').jestConfig(__dirname);
