// ESLint's flat config: the recommended JavaScript and typescript-eslint rules over src/ and
// ui-tests/, with eslint-config-prettier last so that formatting is prettier's alone.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'lib/',
      'node_modules/',
      'coverage/',
      '.yarn/',
      'ui-tests/test-results/',
      'ui-tests/playwright-report/',
      'ui-tests/node_modules/',
      '../notebook_deploy/labextension/'
    ]
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { ...globals.browser, ...globals.node, ...globals.jest }
    },
    rules: {
      // JupyterLab's idiom: a class and a namespace of the same name merge, so that
      // `DeploymentsModel.IOptions` sits next to `DeploymentsModel` (as in @jupyterlab/*).
      '@typescript-eslint/no-namespace': 'off'
    }
  },
  {
    // jest, babel and playwright load these configs as CommonJS: require() is their module syntax.
    files: ['**/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' }
  },
  prettier
);
