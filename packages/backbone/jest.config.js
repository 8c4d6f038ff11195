module.exports = require('../../jest.config.js').jestConfig(__dirname);
