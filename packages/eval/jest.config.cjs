module.exports = { ...require('../../jest.config.cjs').jestConfig(__dirname), testEnvironment: require('node:path').join(__dirname, 'jest.env.cjs') };
